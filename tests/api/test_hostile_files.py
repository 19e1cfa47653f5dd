"""Hostile files (issue 14, items 6, 7 and 12's files): load and read_idx do work
bounded by a file's real size and refuse every malformed file with a ModelFileError
(ValueError) naming it, never block on a named pipe; save keeps a replaced file's
permissions, refuses a read-only one, writes through a symbolic link, cleans up its
temporary files (a killed save's too) and handles names up to NAME_MAX.

The cases that allocate gigabytes on code without the bounds run in a child process
with an address-space limit (RLIMIT_AS), so that they fail there quickly with a
MemoryError instead of exhausting the machine."""
import gzip
import io as stdio
import json
import os
import re
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
import zlib

import numpy as np
import pytest

import fastnn as fn
from fastnn import datasets as ds
from fastnn import fileformat
from fastnn import io as fio

POSIX = pytest.mark.skipif(os.name != "posix", reason="POSIX files and permissions")


def make(seed=0):
    return fn.Sequential(fn.Dense(3, 4, activation="relu"), fn.Dense(4, 2),
                         dtype=np.float32, seed=seed)


def good_file(path):
    """Save a valid model with Adam state at ``path``: (its arrays, metadata dict)."""
    model = make()
    X = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    model.fit(X, np.arange(8) % 2, loss="cross_entropy", optimizer="adam", epochs=1)
    model.save(path)
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return arrays, json.loads(arrays["metadata"].tobytes())


@pytest.fixture
def good(tmp_path):
    return good_file(tmp_path / "good.npz")


def meta_array(meta):
    return np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)


def write_npz(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, allow_pickle=False, **arrays)
    return path


def dense_meta(good, n_in, n_out):
    """The good file's metadata with one Dense(n_in, n_out) layer and no optimizer."""
    layer = dict(good[1]["layers"][0], in_features=n_in, out_features=n_out)
    return dict(good[1], layers=[layer], optimizer=None)


def refused(path, match):
    with pytest.raises(fio.ModelFileError, match=match) as info:
        fio.load(path)
    assert str(path) in str(info.value)
    return info.value


# ---- a zip written by hand: sizes that lie, deflate streams that bomb -------------
def npy_header(shape, descr="<f4"):
    out = stdio.BytesIO()
    np.lib.format.write_array_header_1_0(
        out, {"descr": descr, "fortran_order": False, "shape": shape})
    return out.getvalue()


def raw_npy_header(text):
    """A .npy 1.0 header holding exactly ``text`` (even a damaged one)."""
    body = text.encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body


def zero_bomb(prefix, mib):
    """A raw deflate stream of ``prefix`` followed by ``mib`` MiB of zeros, made
    without compressing them all: after a full flush deflate starts afresh, so each
    further MiB of zeros compresses to the same bytes."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(1 << 20)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    assert c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH) == block
    return head + block * mib + c.flush(zlib.Z_FINISH), len(prefix) + (mib << 20)


def raw_zip(members):
    """A zip of (name, payload, declared size, method[, CRC]) members; sizes over 4 GiB
    get a zip64 extra field.  The CRC is the payload's unless given."""
    out, central = bytearray(), bytearray()
    for name, payload, size, method, *crc in members:
        name = name.encode()
        zip64 = size >= 0xFFFFFFFF
        extra = struct.pack("<HHQQ", 1, 16, size, len(payload)) if zip64 else b""
        sizes = (0xFFFFFFFF, 0xFFFFFFFF) if zip64 else (len(payload), size)
        crc = crc[0] if crc else zlib.crc32(payload)
        fields = (45 if zip64 else 20, 0, method, 0, 0x21, crc,
                  *sizes, len(name), len(extra))
        central += (struct.pack("<4sH", b"PK\x01\x02", 45)
                    + struct.pack("<HHHHHIIIHH", *fields)
                    + struct.pack("<HHHII", 0, 0, 0, 0, len(out)) + name + extra)
        out += struct.pack("<4s", b"PK\x03\x04") + struct.pack("<HHHHHIIIHH", *fields) \
            + name + extra + payload
    n = len(members)
    return bytes(out + central + struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, n, n,
                                             len(central), len(out), 0))


def stored(name, array):
    buf = stdio.BytesIO()
    np.lib.format.write_array(buf, np.asarray(array), allow_pickle=False)
    return (name + ".npy", buf.getvalue(), len(buf.getvalue()), zipfile.ZIP_STORED)


# ---- item 6: bounded work before validation (a child with an address-space limit) --
CHILD = textwrap.dedent("""
    import json, resource, sys, time
    import fastnn as fn
    fn.load(sys.argv[1])                   # imports and kernels loaded before the limit
    with open("/proc/self/status") as f:
        vm = int(f.read().split("VmSize:")[1].split()[0]) * 1024
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    resource.setrlimit(resource.RLIMIT_AS, (vm + (512 << 20), hard))
    out = {}
    for path in sys.argv[2:]:
        start = time.perf_counter()
        try:
            fn.load(path)
            kind, message = "loaded", ""
        except BaseException as exc:
            kind, message = type(exc).__name__, str(exc)[:3000]
        out[path] = (kind, message, time.perf_counter() - start)
    print(json.dumps(out))
""")


def bounded_cases(good):
    """name -> (zip bytes, what the refusal must say)."""
    ok = [stored(k, v) for k, v in good[0].items() if k != "metadata"]

    def arch(n_in, n_out):
        return stored("metadata", meta_array(dense_meta(good, n_in, n_out)))

    tib = 1 << 40
    side = 1 << 19                                      # (2**19)**2 float32 = 1 TiB
    lying = npy_header((side, side))
    deflated_lie, _ = zero_bomb(lying, 1)
    bomb, bomb_size = zero_bomb(npy_header((1 << 28,)), 1024)     # 1 GiB, ~1 MB
    return {
        # 493 bytes claiming Dense(15000, 15000): 35.7 s and 3.5 GiB before
        "claims_dense_15000": (raw_zip([arch(15000, 15000)]), r"missing arrays"),
        "claims_dense_100000": (raw_zip([arch(100000, 100000)]), r"missing arrays"),
        # a .npy header and a zip64 size that agree on 1 TiB, in a small file
        "zip64_stored_lie": (raw_zip([arch(side, side), stored("param/0.bias",
                                                               np.zeros(side, "f4")),
                                      ("param/0.weight.npy", lying + bytes(64),
                                       tib + len(lying), zipfile.ZIP_STORED)]),
                             r"claims \d+ bytes from \d+ stored bytes"),
        "zip64_deflated_lie": (raw_zip([arch(side, side),
                                        stored("param/0.bias", np.zeros(side, "f4")),
                                        ("param/0.weight.npy", deflated_lie,
                                         tib + len(lying), zipfile.ZIP_DEFLATED)]),
                               r"claims \d+ bytes from \d+ stored bytes"),
        # a deflate bomb in an extra member, and in a real member of the wrong shape
        "bomb_in_extra_member": (raw_zip([stored("metadata", good[0]["metadata"]), *ok,
                                          ("bomb.npy", bomb, bomb_size,
                                           zipfile.ZIP_DEFLATED)]),
                                 r"unexpected arrays \['bomb'\]"),
        "bomb_as_weight": (raw_zip([stored("metadata", good[0]["metadata"]),
                                    *[m for m in ok if m[0] != "param/0.weight.npy"],
                                    ("param/0.weight.npy", bomb, bomb_size,
                                     zipfile.ZIP_DEFLATED)]),
                           r"'param/0.weight' has shape \(268435456,\)"),
    }


@pytest.fixture(scope="module")
def bounded_results(tmp_path_factory):
    if not sys.platform.startswith("linux"):
        pytest.skip("measures the child's address space through /proc")
    folder = tmp_path_factory.mktemp("bounded")
    cases = bounded_cases(good_file(folder / "good.npz"))
    paths = {}
    for name, (data, match) in cases.items():
        (folder / name).write_bytes(data)
        paths[name] = str(folder / name)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(folder / "good.npz"),
                           *paths.values()], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.splitlines()[-1])
    return {name: (results[paths[name]], paths[name], cases[name][1]) for name in cases}


@pytest.mark.parametrize("case", ["claims_dense_15000", "claims_dense_100000",
                                  "zip64_stored_lie", "zip64_deflated_lie",
                                  "bomb_in_extra_member", "bomb_as_weight"])
def test_load_work_is_bounded_before_validation(bounded_results, case):
    """Refused quickly (under 2 s) and within 512 MiB more address space, with a
    ModelFileError naming the file: nothing allocated, built or inflated in proportion
    to what the metadata or a header or the zip's directory claims."""
    (kind, message, seconds), path, match = bounded_results[case]
    assert kind == "ModelFileError", (kind, message[:500])
    assert path in message
    assert re.search(match, message), message
    assert seconds < 2.0


def test_size_checks_run_before_any_member_is_inflated(tmp_path, good, monkeypatch):
    """Only the headers (a few kilobytes of each member) are read before the members'
    names, dtypes and shapes are validated."""
    header = npy_header((1 << 24,))
    bomb, size = zero_bomb(header, 64)
    crc = zlib.crc32(bytes(64 << 20), zlib.crc32(header))      # a valid member
    data = raw_zip([stored("metadata", good[0]["metadata"]),
                    ("junk.npy", bomb, size, zipfile.ZIP_DEFLATED, crc)])
    (tmp_path / "m.npz").write_bytes(data)
    reads = []
    real_read = zipfile.ZipExtFile.read

    def counting_read(self, n=-1):
        out = real_read(self, n)
        reads.append(len(out))
        return out

    monkeypatch.setattr(zipfile.ZipExtFile, "read", counting_read)
    refused(tmp_path / "m.npz", r"missing arrays")
    assert sum(reads) < 1 << 20


# ---- item 6: every malformed file raises ModelFileError naming it --------------------
@pytest.mark.parametrize("text", [
    "{'descr': '<f4', 'fortran_order': False, 'shape': (3,",          # tokenize error
    "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }" + "(" * 300,
    "[" * 5000,
    "{'descr': object, 'fortran_order': False, 'shape': (3,), }",
])
def test_damaged_npy_header(tmp_path, good, text):
    arrays = dict(good[0])
    write_npz(tmp_path / "m.npz", arrays)
    with zipfile.ZipFile(tmp_path / "m.npz", "a") as zf:
        zf.writestr("param/9.weight.npy", raw_npy_header(text.ljust(118) + "\n"))
    refused(tmp_path / "m.npz", r"'param/9.weight' has a damaged .npy header")


def _metadata_text(tmp_path, good, text):
    write_npz(tmp_path / "m.npz",
              dict(good[0], metadata=np.frombuffer(text.encode(), dtype=np.uint8)))
    return tmp_path / "m.npz"


@pytest.mark.parametrize("depth", [100_000, 17])
def test_metadata_nesting_is_capped(tmp_path, good, depth):
    # Deep enough for json's recursive parser to raise RecursionError, and just over
    # the cap in an informational field (which the old code accepted).
    nested = "[" * depth + "]" * depth
    text = json.dumps(dict(good[1], fastnn_version="X")).replace('"X"', nested)
    # (one level more: the metadata object itself)
    refused(_metadata_text(tmp_path, good, text), f"nests {depth + 1} levels deep")


def test_metadata_nesting_ignores_brackets_in_strings(tmp_path, good):
    text = json.dumps(dict(good[1], fastnn_version='[{\\"' * 50))
    assert isinstance(fio.load(_metadata_text(tmp_path, good, text)), fn.Sequential)


@pytest.mark.parametrize("value, match", [
    ("1" * 5000, "an integer of 5000 digits"),
    ("-" + "9" * 31, "an integer of 31 digits"),
    ("1e999", "overflows a float"),
    ("NaN", "JSON has no NaN"),
    ("-Infinity", "JSON has no NaN"),
])
def test_metadata_numbers_json_cannot_hold(tmp_path, good, value, match):
    text = json.dumps(dict(good[1], fastnn_version="X")).replace('"X"', value)
    refused(_metadata_text(tmp_path, good, text), match)


def test_metadata_size_is_capped(tmp_path, good):
    meta = dict(good[1], fastnn_version="x" * (1 << 20))
    write_npz(tmp_path / "m.npz", dict(good[0], metadata=meta_array(meta)))
    refused(tmp_path / "m.npz", r"'metadata' is \d+ bytes; at most 1048576")


def test_unhashable_loss_type(tmp_path, good):
    meta = dict(good[1], loss={"type": ["mse"], "param": None})
    write_npz(tmp_path / "m.npz", dict(good[0], metadata=meta_array(meta)))
    refused(tmp_path / "m.npz", "metadata 'loss' must be null or an object")


def test_unsupported_compression(tmp_path, good):
    write_npz(tmp_path / "m.npz", good[0])
    with zipfile.ZipFile(tmp_path / "m.npz", "a", compression=zipfile.ZIP_BZIP2) as zf:
        zf.writestr("param/9.bias.npy", npy_header((0,)))
    refused(tmp_path / "m.npz", r"'param/9.bias.npy' uses zip compression method 12")


def test_deflated_file_still_loads(tmp_path, good):
    """np.savez_compressed's files are within the bounds (deflate, honest sizes)."""
    with open(tmp_path / "m.npz", "wb") as f:
        np.savez_compressed(f, **good[0])
    model = fio.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(model.get_weights()[0], good[0]["param/0.weight"])


# ---- item 6: non-regular files ------------------------------------------------------
def call_on_fifo(fifo, function):
    """The exception ``function(fifo)`` raises (``fifo`` a named pipe with no writer),
    failing the test if it blocks."""
    result = {}

    def run():
        try:
            function(fifo)
        except BaseException as exc:           # noqa: BLE001 (reported below)
            result["exc"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(3)
    blocked = thread.is_alive()
    if blocked:                 # release it: a writer that opens and closes gives EOF
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(3)
    assert not blocked, "blocked on a named pipe"
    return result.get("exc")


@POSIX
def test_load_refuses_a_named_pipe_without_blocking(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    exc = call_on_fifo(fifo, fio.load)
    assert isinstance(exc, fio.ModelFileError) and str(fifo) in str(exc)
    assert "named pipe (FIFO), not a regular file" in str(exc)


@POSIX
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_load_refuses_a_device(device):
    if not os.path.exists(device):
        pytest.skip(f"no {device}")
    refused(device, "it is a device, not a regular file")


def test_load_refuses_a_folder(tmp_path):
    refused(tmp_path, "it is a folder, not a regular file")


@POSIX
def test_load_checks_the_opened_descriptor_too(tmp_path, monkeypatch):
    """A name swapped for a pipe between the stat and the open: the open does not
    block (O_NONBLOCK) and the descriptor's fstat refuses it."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    real_stat = os.stat
    # When it was checked, the name was a regular file.
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: real_stat(
        __file__ if str(p) == str(fifo) else p, *a, **k))
    exc = call_on_fifo(fifo, fio.load)
    assert isinstance(exc, fio.ModelFileError) and "named pipe" in str(exc), exc


# ---- item 7: save -----------------------------------------------------------------
def temp_files(folder):
    return sorted(n for n in os.listdir(folder) if n.endswith(".tmp"))


@POSIX
@pytest.mark.parametrize("mode", [0o600, 0o640, 0o604])
def test_save_keeps_the_permissions_of_a_replaced_file(tmp_path, mode):
    path = tmp_path / "m.npz"
    make(seed=1).save(path)
    os.chmod(path, mode)
    umask = os.umask(0o022)
    try:
        make(seed=2).save(path)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == mode
    np.testing.assert_array_equal(fio.load(path).get_weights()[0],
                                  make(seed=2).get_weights()[0])


@POSIX
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="only root can give a file to another user")
def test_save_as_root_keeps_the_owner_of_a_replaced_file(tmp_path):
    path = tmp_path / "m.npz"
    make(seed=1).save(path)
    os.chown(path, 12345, 23456)
    make(seed=2).save(path)
    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == (12345, 23456)


def _unchanged_after_refusal(path, save):
    before = path.read_bytes()
    with pytest.raises(PermissionError, match="read-only") as info:
        save()
    assert str(path) in str(info.value)
    assert path.read_bytes() == before
    assert temp_files(path.parent) == []


@POSIX
def test_save_refuses_to_replace_a_read_only_file(tmp_path):
    """Even as root (where os.access says yes to everything): a file with no write
    bit was made read-only on purpose."""
    path = tmp_path / "m.npz"
    make(seed=1).save(path)
    os.chmod(path, 0o444)
    _unchanged_after_refusal(path, lambda: make(seed=2).save(path))
    # the command line's early check says the same
    with pytest.raises(PermissionError, match="read-only"):
        fileformat.check_writable(path, "the model file")


@POSIX
@pytest.mark.parametrize("owner, group, mode, allowed", [
    ("me", "other", 0o644, True),       # the owner's bit counts for the owner
    ("me", "other", 0o464, False),      # ... even if others may write
    ("other", "mine", 0o464, True),     # the group's bit for a member of the group
    ("other", "mine", 0o446, False),
    ("other", "other", 0o446, True),    # others' bit for everyone else
    ("other", "other", 0o664, False),
])
def test_save_decides_by_permission_bits_and_ownership(tmp_path, monkeypatch, owner,
                                                       group, mode, allowed):
    """The caller's class (owner, group member, other) decides, as the kernel would
    for a non-root user; run as any user by pretending to be uid/gid 4242."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give the file to the pretended owner")
    path = tmp_path / "m.npz"
    make(seed=1).save(path)
    os.chown(path, 4242 if owner == "me" else 5353, 4242 if group == "mine" else 5353)
    os.chmod(path, mode)
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    monkeypatch.setattr(os, "getegid", lambda: 4242)
    monkeypatch.setattr(os, "getgroups", lambda: [4242])
    if allowed:
        make(seed=2).save(path)
        np.testing.assert_array_equal(fio.load(path).get_weights()[0],
                                      make(seed=2).get_weights()[0])
    else:
        _unchanged_after_refusal(path, lambda: make(seed=2).save(path))


@POSIX
def test_save_writes_through_a_symbolic_link(tmp_path):
    """The link stays a link; the file it points to is replaced (atomically, in its
    own folder), keeping its permissions."""
    (tmp_path / "store").mkdir()
    real = tmp_path / "store" / "model.npz"
    make(seed=1).save(real)
    os.chmod(real, 0o600)
    link = tmp_path / "latest.npz"
    link.symlink_to(real)
    make(seed=2).save(link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o600
    np.testing.assert_array_equal(fio.load(real).get_weights()[0],
                                  make(seed=2).get_weights()[0])
    assert temp_files(tmp_path) == [] and temp_files(tmp_path / "store") == []


@POSIX
def test_save_through_a_dangling_link_creates_its_target(tmp_path):
    link = tmp_path / "latest.npz"
    link.symlink_to("made.npz")
    make(seed=2).save(link)
    assert link.is_symlink() and (tmp_path / "made.npz").is_file()


@POSIX
def test_save_to_a_symbolic_link_loop_is_refused(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(OSError, match="symbolic links form a loop") as info:
        make().save(tmp_path / "a")
    assert str(tmp_path / "a") in str(info.value)
    assert (tmp_path / "a").is_symlink() and (tmp_path / "b").is_symlink()


@POSIX
def test_save_does_not_replace_a_named_pipe(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(OSError, match="named pipe .* only a regular file is replaced"):
        make().save(tmp_path / "pipe")
    assert stat.S_ISFIFO(os.stat(tmp_path / "pipe").st_mode)
    assert temp_files(tmp_path) == []


def test_save_with_a_250_byte_name(tmp_path):
    path = tmp_path / ("m" * 246 + ".npz")
    make(seed=1).save(path)
    make(seed=2).save(path)                    # replacing it, too
    np.testing.assert_array_equal(fio.load(path).get_weights()[0],
                                  make(seed=2).get_weights()[0])
    assert os.listdir(tmp_path) == [path.name]


KILLED_SAVE = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import fastnn as fn
    # killed after the temporary file is written, before the rename: kill -9
    os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
    fn.Sequential(fn.Dense(3, 4), fn.Dense(4, 2), seed=3).save(sys.argv[1])
""")


@POSIX
def test_a_killed_saves_leftover_is_removed_by_the_next_save(tmp_path):
    path = tmp_path / "m.npz"
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(path)],
                              timeout=120, capture_output=True, check=False)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    # the second save already removed the first one's leftover
    leftovers = temp_files(tmp_path)
    assert len(leftovers) == 1 and not path.exists()
    # recognisable: fastnn's prefix, a hash of the target's name, host and pid
    assert all(n.startswith(".fastnn-save-") for n in leftovers)
    # a save to another name in the folder leaves them; a save to this name removes
    # them, but not the temporary file of a save still running (this process's)
    make().save(tmp_path / "other.npz")
    assert temp_files(tmp_path) == leftovers
    running = fileformat._temp_stem(path.name) + f"{os.getpid()}-0000abcd.tmp"
    (tmp_path / running).write_bytes(b"")
    make().save(path)
    assert temp_files(tmp_path) == [running]


@POSIX
@pytest.mark.parametrize("where, error", [
    ("savez", KeyboardInterrupt), ("savez", OSError), ("fsync", OSError),
    ("fsync", KeyboardInterrupt), ("chmod", KeyboardInterrupt),
    ("chmod", OSError),          # a file system without permissions: saved all the same
])
def test_failed_save_removes_its_temporary_file(tmp_path, monkeypatch, where, error):
    (tmp_path / "store").mkdir()
    real = tmp_path / "store" / "m.npz"
    make(seed=1).save(real)
    before = real.read_bytes()
    (tmp_path / "link.npz").symlink_to(real)

    def fail(*args, **kwargs):
        raise error(5, "injected") if error is OSError else error()

    monkeypatch.setattr({"savez": np, "fsync": os, "chmod": os}[where],
                        {"savez": "savez", "fsync": "fsync", "chmod": "fchmod"}[where],
                        fail)
    if (where, error) == ("chmod", OSError):
        make(seed=2).save(tmp_path / "link.npz")
        monkeypatch.undo()
        assert fio.load(real).get_weights()[0].tolist() == \
            make(seed=2).get_weights()[0].tolist()
    else:
        with pytest.raises(error):
            make(seed=2).save(tmp_path / "link.npz")
        assert real.read_bytes() == before
    assert temp_files(tmp_path) == [] and temp_files(tmp_path / "store") == []


# ---- item 12: IDX files ------------------------------------------------------------
def idx(shape, code=0x08, data=None):
    head = bytes([0, 0, code, len(shape)]) + b"".join(struct.pack(">I", d)
                                                      for d in shape)
    return head + (bytes(int(np.prod(shape))) if data is None else data)


@pytest.mark.parametrize("images_shape", [(0, 28, 28), (3, 0, 28)])
def test_idx_dataset_without_data_is_refused_naming_the_file(tmp_path, images_shape):
    (tmp_path / "images").write_bytes(idx(images_shape))
    (tmp_path / "labels").write_bytes(idx((images_shape[0],)))
    with pytest.raises(ValueError, match=r"images: the images hold no data \(shape") \
            as info:
        ds.load_idx_dataset(tmp_path / "images", tmp_path / "labels")
    assert str(tmp_path / "images") in str(info.value)
    # read_idx itself returns the (valid, empty) array
    assert ds.read_idx(tmp_path / "images").shape == images_shape


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("ndim", [65, 255])
def test_read_idx_too_many_dimensions(tmp_path, compress, ndim):
    data = idx((1,) * ndim)
    path = tmp_path / "many"
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(ValueError, match=rf"many: IDX dimension count is {ndim}; a "
                                         rf"NumPy array has at most 64") as info:
        ds.read_idx(path)
    assert str(path) in str(info.value)


@POSIX
def test_read_idx_refuses_a_named_pipe_without_blocking(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    exc = call_on_fifo(fifo, ds.read_idx)
    assert isinstance(exc, ValueError), exc
    assert str(exc) == f"{fifo}: it is a named pipe (FIFO), not a regular file"


def test_read_idx_gzip_trailing_bomb_is_not_inflated(tmp_path):
    """Data after the IDX data is an error at its first chunk: 8 GiB of compressed
    zeros after it are not inflated to their end."""
    stream, _ = zero_bomb(idx((2, 3)), 8192)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    path = tmp_path / "bomb.gz"
    path.write_bytes(header + stream + struct.pack("<II", 0, 0))
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"bomb.gz: at least 1048576 unexpected bytes "
                                         r"after the IDX data"):
        ds.read_idx(path)
    assert time.perf_counter() - start < 2.0
