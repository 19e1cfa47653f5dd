"""Build script: maps the top-level kernels/ folder to fastnn.kernels and compiles its
Cython sources.  Generated C goes to build/ (never into the source tree or the wheel)."""
from setuptools import Extension, setup
from Cython.Build import cythonize

extensions = [
    Extension("fastnn.kernels._dense", ["kernels/_dense.pyx"],
              extra_compile_args=["-O3"]),
]

setup(
    package_dir={"fastnn": "fastnn", "fastnn.kernels": "kernels"},
    # fastnn.data holds only data files (a namespace package to Python); listing it
    # keeps setuptools from warning that it would be left out.
    packages=["fastnn", "fastnn.backends", "fastnn.kernels", "fastnn.training",
              "fastnn.data"],
    ext_modules=cythonize(extensions, build_dir="build",
                          compiler_directives={"language_level": "3"}),
    # The bundled data sets (fastnn.datasets) and their licence notice; listed here, not
    # only in MANIFEST.in, so a wheel built straight from a checkout carries them too.
    package_data={"fastnn.data": ["*.csv.gz", "LICENSE.md"]},
    exclude_package_data={"fastnn.kernels": ["*.c", "*.pyx"]},
)
