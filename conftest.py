"""Loaded by pytest before any test module (and before numba is imported): choose
how the cuda backend's tests run.

With a usable NVIDIA GPU they run for real; without one they run under the Numba
CUDA simulator at tiny sizes, which must be switched on before numba is imported
(numba reads NUMBA_ENABLE_CUDASIM once).  The GPU check talks to the driver directly
(``cuInit`` / ``cuDeviceGetCount`` through ctypes) so that numba is not imported yet.
Set ``FASTNN_TEST_CUDA=sim`` to force the simulator, ``=gpu`` to require a GPU."""
import ctypes
import os


def _gpu_count():
    for lib in ("libcuda.so.1", "libcuda.so"):
        try:
            cu = ctypes.CDLL(lib)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if cu.cuInit(0) == 0 and cu.cuDeviceGetCount(ctypes.byref(count)) == 0:
            return count.value
        return 0
    return 0


_mode = os.environ.get("FASTNN_TEST_CUDA", "auto")
if _mode == "sim" or (_mode == "auto" and "NUMBA_ENABLE_CUDASIM" not in os.environ
                      and _gpu_count() == 0):
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
elif _mode == "gpu" and _gpu_count() == 0:
    raise RuntimeError("FASTNN_TEST_CUDA=gpu but no CUDA GPU is usable")
