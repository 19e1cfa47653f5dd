"""Backends behind one small kernel interface (:class:`.base.Backend`).

``numpy`` is the reference (the spec); ``cpu`` is compiled and the default; ``cuda``
runs on an NVIDIA GPU (needs the numba-cuda package: ``pip install 'fastnn[cuda]'``)."""

from ..kernels.specs import lookup

_FACTORIES = {
    "numpy": lambda: __import__("fastnn.backends.numpy_backend",
                                fromlist=["NumpyBackend"]).NumpyBackend(),
    "cpu": lambda: __import__("fastnn.backends.cpu_backend",
                              fromlist=["CpuBackend"]).CpuBackend(),
    "cuda": lambda: __import__("fastnn.backends.cuda_backend",
                               fromlist=["CudaBackend"]).CudaBackend(),
}
_instances = {}
_unavailable = {}
DEFAULT = "cpu"


def get_backend(name):
    """The backend object for ``name`` (or ``name`` itself if it is a backend)."""
    if not isinstance(name, str):
        if hasattr(name, "dense_forward"):
            return name
        raise TypeError(f"backend must be a name such as {DEFAULT!r}, got {name!r}")
    name = lookup(_FACTORIES, name, "backend")      # (any case)
    if name not in _instances:
        try:
            _instances[name] = _FACTORIES[name]()
        except ImportError as exc:      # (CudaUnavailable is one: package, driver, GPU)
            _unavailable[name] = str(exc)
            raise RuntimeError(f"backend {name!r} is not usable here: {exc}") from exc
    return _instances[name]


def available_backends():
    """The names of the backends that work on this machine, e.g. ``("numpy", "cpu")``."""
    names = []
    for name in _FACTORIES:
        try:
            get_backend(name)
        except RuntimeError:
            continue
        names.append(name)
    return tuple(names)


def unavailable_reasons():
    """name -> why that backend could not be loaded (empty when all work)."""
    available_backends()
    return dict(_unavailable)
