"""Start-up: where numba's cache goes, read-only installs, the first-run message.

A copy of the package (the built ``_blas`` extension included) is made in a folder the
child processes cannot write to, with a read-only ``HOME`` too: run as the user
``nobody`` when these tests run as root (root may write anywhere), else with the
folders' write bits removed.  Each child is a fresh interpreter, since the cache
directory is decided when fastnn (and numba) are imported.
"""
import os
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest

import fastnn
import fastnn.kernels
from fastnn import threads

MESSAGE = "fastnn: compiling kernels"
NOBODY = 65534

# One training step of a small model (what a first run after install does), then where
# numba caches and how many kernels were really compiled in this process.
STEP = """
import numpy as np, fastnn as fn
from fastnn.kernels import _numba_setup as s
model = fn.Sequential(fn.Dense(8, 16, activation="relu"), fn.Dense(16, 3),
                      backend="cpu", dtype=np.float32, seed=0)
opt = fn.SGD(model.parameters(), lr=0.1)
loss_fn = fn.CrossEntropyLoss()
x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
opt.zero_grad()
loss = loss_fn.forward(model.forward(x), np.array([0, 1, 2, 1, 0]))
model.backward(loss_fn.backward())
opt.step()
assert np.isfinite(loss)
print("CACHE", s.STATUS["cache_dir"])
print("COMPILES", s.STATUS["compiles"])
"""

# One cheap kernel (the gradient norm), compiled or loaded.
KERNEL = """
import numpy as np, fastnn as fn
from fastnn.kernels import _numba_setup as s
model = fn.Sequential(fn.Dense(4, 3), backend="cpu", dtype=np.float32, seed=0)
assert fn.clip_grad_norm(model.parameters(), 1.0) == 0.0
print("CACHE", s.STATUS["cache_dir"])
print("COMPILES", s.STATUS["compiles"])
"""

# Import only, then where the cache is (no kernel compiled).
WHERE = """
import fastnn
from fastnn import threads
from fastnn.kernels import _numba_setup as s
print("CACHE", s.STATUS["cache_dir"])
print("INFO", threads.cache_info())
"""


def _field(stdout, key):
    for line in stdout.splitlines():
        if line.startswith(key + " "):
            return line[len(key) + 1:]
    raise AssertionError(f"no {key!r} line in the child's output:\n{stdout}")


class Sandbox:
    """A read-only copy of fastnn, a read-only home, and a way to run a child in them."""

    def __init__(self, root):
        self.root = root
        self.site = os.path.join(root, "site")
        self.home = os.path.join(root, "home")
        self.as_root = hasattr(os, "geteuid") and os.geteuid() == 0
        self.uid = NOBODY if self.as_root else os.getuid()
        pkg = os.path.join(self.site, "fastnn")
        kernels_src = os.path.dirname(fastnn.kernels.__file__)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyx", "*.c")
        shutil.copytree(os.path.dirname(fastnn.__file__), pkg,
                        ignore=lambda d, names: set(ignore(d, names)) | (
                            {"kernels"} if os.path.samefile(d, os.path.dirname(
                                fastnn.__file__)) else set()))
        shutil.copytree(kernels_src, os.path.join(pkg, "kernels"), ignore=ignore)
        os.makedirs(self.home)

    def scratch(self, name, mode=0o1777):
        """A folder the child may write to (world-writable and sticky, like /tmp)."""
        path = os.path.join(self.root, name)
        os.makedirs(path, exist_ok=True)
        os.chmod(path, mode)
        return path

    def lock(self):
        """Make the copy and the home read-only to the child."""
        if self.as_root:
            # nobody must read and traverse; it cannot write (owned by root, 0755).
            for base, dirs, files in os.walk(self.root):
                os.chmod(base, os.stat(base).st_mode | 0o755)
                for f in files:
                    os.chmod(os.path.join(base, f), 0o644)
        else:
            for path in (self.site, self.home):
                for base, dirs, files in os.walk(path):
                    os.chmod(base, 0o555)

    def unlock(self):
        for base, dirs, files in os.walk(self.root):
            os.chmod(base, 0o755)

    def env(self, **extra):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("NUMBA_", "FASTNN_", "XDG_")) and k not in (
                   "PYTHONPATH", "TMPDIR", "TEMP", "TMP", "HOME")}
        # TMPDIR: never the machine's /tmp, where a cache would outlive the test.
        env.update(PYTHONPATH=self.site, HOME=self.home, PYTHONDONTWRITEBYTECODE="1",
                   FASTNN_NUM_THREADS="1", TMPDIR=self.scratch("tmp"))
        env.update(extra)
        return env

    def command(self, code):
        cmd = [sys.executable, "-c", code]
        if self.as_root:
            cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                   "--clear-groups", "--"] + cmd
        return cmd

    def run(self, code, **extra):
        proc = subprocess.run(self.command(code), env=self.env(**extra), cwd=self.site,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (
            f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def why_not(self):
        """None if the child really cannot write the copy or the home, else why."""
        if self.as_root and not shutil.which("setpriv"):
            return "running as root and setpriv (util-linux) is missing to drop to nobody"
        probe = ("import os, sys\n"
                 "for d in sys.argv[1:]:\n"
                 "    try:\n"
                 "        open(os.path.join(d, 'w'), 'w').close()\n"
                 "        print('WRITABLE', d)\n"
                 "    except OSError:\n"
                 "        pass\n"
                 "import numpy, numba, fastnn\n"
                 "print('OK', fastnn.__file__)\n")
        cmd = self.command(probe) + [os.path.join(self.site, "fastnn", "kernels"),
                                     self.home]
        proc = subprocess.run(cmd, env=self.env(), cwd=self.site, capture_output=True,
                              text=True, timeout=120)
        if proc.returncode != 0 or "OK " not in proc.stdout:
            return f"cannot run Python as the restricted user here: {proc.stderr[-500:]}"
        if "WRITABLE" in proc.stdout:
            return f"could not make a read-only install here: {proc.stdout}"
        if not _field(proc.stdout, "OK").startswith(self.site):
            return f"the copy was not the fastnn imported: {proc.stdout}"
        return None


@pytest.fixture(scope="module")
def sandbox():
    # Not pytest's tmp_path: it lies under a folder only its owner may enter.
    root = tempfile.mkdtemp(prefix="fastnn-startup-")
    os.chmod(root, 0o755)
    box = Sandbox(root)
    try:
        box.lock()
        why = box.why_not()
        if why:
            pytest.skip(f"no read-only situation can be made in this sandbox: {why}")
        yield box
    finally:
        box.unlock()
        shutil.rmtree(root, ignore_errors=True)


def test_read_only_install_and_home_fall_back_to_a_private_temp_dir(sandbox):
    """Read-only package and home, no NUMBA_CACHE_DIR: import and a training step work,
    the kernels are cached in <temp>/fastnn-numba-<uid> (0700), the user is told once
    on the first run and not at all on the next."""
    tmp = sandbox.scratch("tmp-a")
    cold = sandbox.run(STEP, TMPDIR=tmp)
    where = os.path.join(tmp, f"fastnn-numba-{sandbox.uid}")
    cache = _field(cold.stdout, "CACHE")
    assert cache.startswith(where + os.sep), cache
    st = os.stat(where)
    assert st.st_uid == sandbox.uid and stat.S_IMODE(st.st_mode) == 0o700
    assert any(name.endswith(".nbi") for name in os.listdir(cache))
    assert int(_field(cold.stdout, "COMPILES")) > 0
    assert cold.stderr.count(MESSAGE) == 1, cold.stderr
    assert f"first run only (cached in {cache})" in cold.stderr

    warm = sandbox.run(STEP, TMPDIR=tmp)
    assert _field(warm.stdout, "CACHE") == cache
    assert int(_field(warm.stdout, "COMPILES")) == 0
    assert MESSAGE not in warm.stderr, warm.stderr


def test_numba_cache_dir_is_honoured_and_quiet_silences(sandbox):
    mine = sandbox.scratch("numba-cache", 0o777)
    where = sandbox.run(WHERE, NUMBA_CACHE_DIR=mine, TMPDIR=sandbox.scratch("tmp-b"))
    assert _field(where.stdout, "CACHE").startswith(mine + os.sep)
    assert "'numba_cache_writable': True" in _field(where.stdout, "INFO")
    assert "(NUMBA_CACHE_DIR)" in _field(where.stdout, "INFO")
    # A real compile into it, with the message silenced.
    quiet = sandbox.run(KERNEL, NUMBA_CACHE_DIR=mine, FASTNN_QUIET="1")
    assert int(_field(quiet.stdout, "COMPILES")) > 0
    assert MESSAGE not in quiet.stderr, quiet.stderr
    assert any(name.endswith(".nbi") for name in os.listdir(_field(quiet.stdout, "CACHE")))


def test_editing_any_kernel_source_recompiles(sandbox):
    """numba stamps a cache entry with its function's own file; a kernel inlines the
    formulas of formulas.py and is chosen through specs.py, so fastnn's entries carry
    a stamp of every kernel source: after an edit of formulas.py, the kernels compile
    again instead of loading stale code."""
    mine = sandbox.scratch("numba-cache-edit", 0o777)
    assert int(_field(sandbox.run(KERNEL, NUMBA_CACHE_DIR=mine).stdout,
                      "COMPILES")) > 0
    assert int(_field(sandbox.run(KERNEL, NUMBA_CACHE_DIR=mine).stdout,
                      "COMPILES")) == 0
    path = os.path.join(sandbox.site, "fastnn", "kernels", "formulas.py")
    with open(path, "rb") as fh:
        original = fh.read()
    try:
        with open(path, "ab") as fh:
            fh.write(b"\n# an edit\n")
        edited = sandbox.run(KERNEL, NUMBA_CACHE_DIR=mine)
        assert int(_field(edited.stdout, "COMPILES")) > 0
    finally:
        with open(path, "wb") as fh:
            fh.write(original)


def test_nothing_writable_turns_caching_off(sandbox):
    """The only writable place holds a fastnn-numba-<uid> that anyone may write to (and
    that, run as root, belongs to root, not to the child's user): it is not used;
    caching is off for the kernels, the import and the kernels still work, and the
    user is told why it is slow."""
    tmp = sandbox.scratch("tmp-c")
    planted = os.path.join(tmp, f"fastnn-numba-{sandbox.uid}")
    os.mkdir(planted)
    os.chmod(planted, 0o777)     # and, when run as root, owned by root, not by nobody
    where = sandbox.run(WHERE, TMPDIR=tmp)
    assert _field(where.stdout, "CACHE") == "None"
    assert "caching off" in _field(where.stdout, "INFO")
    off = sandbox.run(KERNEL, TMPDIR=tmp)
    assert _field(off.stdout, "CACHE") == "None"
    assert off.stderr.count(MESSAGE) == 1
    assert "not cached" in off.stderr and "NUMBA_CACHE_DIR" in off.stderr
    assert os.listdir(planted) == []


def test_private_dir_rules(tmp_path):
    fresh = str(tmp_path / "fresh")
    assert threads._private_dir(fresh) == fresh
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o700
    loose = str(tmp_path / "loose")
    os.mkdir(loose)
    os.chmod(loose, 0o777)
    assert threads._private_dir(loose) is None          # others could plant pickles
    link = str(tmp_path / "link")
    os.symlink(fresh, link)
    assert threads._private_dir(link) is None
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        theirs = str(tmp_path / "theirs")
        os.mkdir(theirs, 0o700)
        os.chown(theirs, NOBODY, NOBODY)
        assert threads._private_dir(theirs) is None


def test_info_reports_the_cache():
    info = threads.info()
    assert info["numba_cache_dir"]
    assert isinstance(info["numba_cache_writable"], bool)


def test_info_reports_the_blas_core_type(monkeypatch):
    """Which kernels OpenBLAS picked (threadpoolctl's architecture) and whether
    OPENBLAS_CORETYPE chose them: they move step times by 7-24% between machines."""
    from threadpoolctl import threadpool_info

    fastnn.get_backend("cpu")                  # scipy's OpenBLAS is loaded
    picked = {p.get("architecture") for p in threadpool_info()
              if p.get("user_api") == "blas"}
    info = threads.info()
    assert info["blas"] and all("core type" in line for line in info["blas"])
    assert any(f"core type {a}" in line for a in picked if a for line in info["blas"])
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    assert threads.info()["openblas_coretype"].startswith("not set")
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    assert threads.info()["openblas_coretype"] == "Haswell"


def test_read_only_mount_as_root(sandbox):
    """Root in a read-only file system (a container's, say), where permission bits do
    not stop root and only a real write tells: with the copy, the home and the
    temporary folders mounted read-only, caching is off and the kernels still work."""
    if not sandbox.as_root:
        pytest.skip("needs root, to mount read-only folders in a private namespace")
    if not shutil.which("unshare"):
        pytest.skip("unshare (util-linux) is missing")
    tmps = [d for d in ("/tmp", "/var/tmp", "/usr/tmp") if os.path.isdir(d)]
    ro = " && ".join(f"mount --bind {d} {d} && mount -o remount,bind,ro {d}"
                     for d in [sandbox.root, *tmps])
    script = f"{ro} && exec {sys.executable} -c \"$CODE\""
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script],
                          env=sandbox.env(CODE=KERNEL), cwd=sandbox.site,
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and "mount" in proc.stderr and "COMPILES" not in proc.stdout:
        pytest.skip(f"cannot mount read-only here: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, proc.stderr
    assert _field(proc.stdout, "CACHE") == "None"
    assert "not cached" in proc.stderr
