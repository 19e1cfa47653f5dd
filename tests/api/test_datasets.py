"""fastnn.datasets: the bundled data sets (and, where scikit-learn is installed, that
they equal its loaders' arrays exactly), train_test_split, and the IDX reader against
files written here, well-formed and malformed."""
import gzip
import struct

import numpy as np
import pytest

from fastnn import datasets as ds


# --------------------------------------------------------------------------- bundled data

def test_digits():
    X, y = ds.load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float64 and X.flags.c_contiguous
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0 and X.max() == 16 and np.array_equal(X, np.round(X))
    assert set(np.unique(y)) == set(range(10))
    assert np.bincount(y).min() >= 170          # about 180 of each digit


def test_breast_cancer():
    X, y = ds.load_breast_cancer()
    assert X.shape == (569, 30) and X.dtype == np.float64 and X.flags.c_contiguous
    assert y.shape == (569,) and y.dtype == np.int64
    assert np.all(np.isfinite(X)) and X.min() >= 0
    assert np.bincount(y).tolist() == [212, 357]    # 0 malignant, 1 benign
    assert X[:, 3].max() == 2501.0                  # area (mean), per the data's notes
    # Malignant tumours are larger on average: the label's meaning, not just its count.
    assert X[y == 0, 0].mean() > X[y == 1, 0].mean()


def test_diabetes():
    X, y = ds.load_diabetes()
    assert X.shape == (442, 10) and X.dtype == np.float64
    assert y.shape == (442,) and y.dtype == np.float64
    np.testing.assert_allclose(X.mean(axis=0), 0, atol=1e-15)
    np.testing.assert_allclose((X ** 2).sum(axis=0), 1, rtol=1e-12)
    assert y.min() == 25 and y.max() == 346

    raw, y_raw = ds.load_diabetes(scaled=False)
    np.testing.assert_array_equal(y_raw, y)
    assert raw[0].tolist() == [59, 2, 32.1, 101.0, 157, 93.2, 38.0, 4.0, 4.8598, 87]
    assert set(np.unique(raw[:, 1])) == {1.0, 2.0}                  # sex
    n = len(raw)
    np.testing.assert_allclose(X, (raw - raw.mean(0)) / (raw.std(0) * np.sqrt(n)),
                               rtol=1e-13, atol=1e-16)


def test_diabetes_scaled_must_be_bool():
    with pytest.raises(TypeError, match="scaled must be True or False"):
        ds.load_diabetes(scaled="yes")


def test_loaders_return_fresh_arrays():
    X, _ = ds.load_digits()
    X[:] = -1
    assert ds.load_digits()[0].min() == 0


@pytest.mark.parametrize("name, kwargs", [
    ("load_digits", {}), ("load_breast_cancer", {}),
    ("load_diabetes", {"scaled": True}), ("load_diabetes", {"scaled": False}),
])
def test_equal_to_sklearn(name, kwargs):
    sk = pytest.importorskip("sklearn.datasets")
    X, y = getattr(ds, name)(**kwargs)
    Xs, ys = getattr(sk, name)(return_X_y=True, **kwargs)
    assert X.shape == Xs.shape and y.shape == ys.shape
    assert X.dtype == Xs.dtype and y.dtype == ys.dtype
    # Bit for bit, not merely close.
    assert X.tobytes() == np.ascontiguousarray(Xs).tobytes()
    assert y.tobytes() == np.ascontiguousarray(ys).tobytes()


# --------------------------------------------------------------------------- splitting

def test_split_shapes_and_partition():
    X = np.arange(20, dtype=np.float32).reshape(10, 2)
    y = np.arange(10)
    Xtr, Xte, ytr, yte = ds.train_test_split(X, y, test_size=0.3, seed=0)
    assert Xtr.shape == (7, 2) and Xte.shape == (3, 2)
    assert ytr.shape == (7,) and yte.shape == (3,)
    assert Xtr.dtype == np.float32 and ytr.dtype == y.dtype     # no cast
    # Rows stay paired with their labels, and every row lands in exactly one side.
    np.testing.assert_array_equal(Xtr[:, 0], 2 * ytr)
    np.testing.assert_array_equal(Xte[:, 0], 2 * yte)
    assert sorted(np.concatenate([ytr, yte]).tolist()) == list(range(10))


def test_split_is_the_seeded_permutation():
    X, y = np.arange(50).reshape(25, 2), np.arange(25)
    order = np.random.default_rng(7).permutation(25)
    Xtr, Xte, ytr, yte = ds.train_test_split(X, y, test_size=5, seed=7)
    np.testing.assert_array_equal(yte, order[:5])
    np.testing.assert_array_equal(ytr, order[5:])
    again = ds.train_test_split(X, y, test_size=5, seed=7)
    for a, b in zip((Xtr, Xte, ytr, yte), again):
        np.testing.assert_array_equal(a, b)
    other = ds.train_test_split(X, y, test_size=5, seed=8)[3]
    assert not np.array_equal(other, yte)


@pytest.mark.parametrize("test_size, n_test", [
    (0.2, 2), (0.25, 3), (0.01, 1), (0.9, 9), (np.float32(0.5), 5),   # ceil, as sklearn
    (1, 1), (9, 9), (np.int64(4), 4),
])
def test_split_sizes(test_size, n_test):
    Xtr, Xte, _, _ = ds.train_test_split(np.zeros((10, 3)), np.zeros(10), test_size)
    assert len(Xte) == n_test and len(Xtr) == 10 - n_test


def test_split_sizes_match_sklearn():
    ms = pytest.importorskip("sklearn.model_selection")
    X, y = np.zeros((97, 2)), np.zeros(97)
    for t in (0.1, 0.2, 0.33, 0.5, 0.77, 1, 13, 96):
        ours = ds.train_test_split(X, y, test_size=t)
        theirs = ms.train_test_split(X, y, test_size=t, random_state=0)
        assert [len(a) for a in ours] == [len(a) for a in theirs]


def test_split_list_input_and_nd_X():
    Xtr, Xte, ytr, yte = ds.train_test_split(np.zeros((6, 2, 3)), [0, 1, 0, 1, 0, 1],
                                             test_size=2)
    assert Xtr.shape == (4, 2, 3) and Xte.shape == (2, 2, 3) and yte.shape == (2,)


@pytest.mark.parametrize("test_size, match", [
    (0.0, r"test_size as a fraction must be in \(0, 1\), got 0.0"),
    (1.0, r"test_size as a fraction must be in \(0, 1\), got 1.0"),
    (-0.2, r"fraction must be in \(0, 1\)"),
    (float("nan"), r"fraction must be in \(0, 1\)"),
    (0.95, r"test_size=0.95 of 10 samples leaves no training sample"),
    (0, r"test_size as an int count must be in \[1, 9\]"),
    (10, r"test_size as an int count must be in \[1, 9\] \(n = 10"),
    (-1, r"int count must be in \[1, 9\]"),
    (True, r"test_size must be a fraction in \(0, 1\) or an int count"),
    ("0.2", r"test_size must be a fraction"),
    (None, r"test_size must be a fraction"),
])
def test_split_bad_test_size(test_size, match):
    with pytest.raises(ValueError, match=match):
        ds.train_test_split(np.zeros((10, 2)), np.zeros(10), test_size=test_size)


def test_split_bad_inputs():
    with pytest.raises(ValueError, match=r"same number of samples, got 10 \(X\) and 9"):
        ds.train_test_split(np.zeros((10, 2)), np.zeros(9))
    with pytest.raises(ValueError, match="at least 2 samples.*got 0"):
        ds.train_test_split(np.zeros((0, 2)), np.zeros(0))
    with pytest.raises(ValueError, match="at least 2 samples.*got 1"):
        ds.train_test_split(np.zeros((1, 2)), np.zeros(1), test_size=0.5)
    with pytest.raises(ValueError, match="samples along the first axis"):
        ds.train_test_split(np.float64(3.0), np.zeros(1))


# --------------------------------------------------------------------------- IDX files

_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C,
          np.float32: 0x0D, np.float64: 0x0E}


def idx_bytes(array, type_code=None):
    """A well-formed IDX file for ``array``, written independently of the reader."""
    array = np.asarray(array)
    code = _CODES[array.dtype.type] if type_code is None else type_code
    head = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d)
                                                      for d in array.shape)
    return head + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path, data, compress=False):
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def sample(dtype, shape, rng):
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    return (rng.standard_normal(shape) * 1e3).astype(dtype)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("dtype", list(_CODES))
@pytest.mark.parametrize("shape", [(7,), (5, 3), (4, 3, 2), (2, 1, 3, 2), (0, 28, 28)])
def test_read_idx_roundtrip(tmp_path, rng, compress, dtype, shape):
    a = sample(dtype, shape, rng)
    # A name that says nothing: compression is detected from the bytes.
    got = ds.read_idx(write(tmp_path / "data.bin", idx_bytes(a), compress))
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    assert got.shape == shape
    assert got.flags.writeable and got.flags.c_contiguous
    np.testing.assert_array_equal(got, a)


def test_read_idx_extreme_values_and_byte_order(tmp_path):
    # The element bytes are big-endian: 0x0102 must read as 258, not 513.
    data = bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0x01, 0x02, 0xFF, 0xFE])
    np.testing.assert_array_equal(ds.read_idx(write(tmp_path / "a", data)), [258, -2])
    a = np.array([np.inf, -np.inf, -0.0, 5e-324, np.finfo(np.float64).max])
    np.testing.assert_array_equal(ds.read_idx(write(tmp_path / "b", idx_bytes(a))), a)
    assert np.signbit(ds.read_idx(tmp_path / "b")[2])


def test_read_idx_path_types(tmp_path):
    path = write(tmp_path / "x.idx", idx_bytes(np.arange(3, dtype=np.uint8)))
    np.testing.assert_array_equal(ds.read_idx(str(path)), [0, 1, 2])


def test_read_idx_gz_name_but_plain_content(tmp_path):
    path = write(tmp_path / "labels.idx1-ubyte.gz", idx_bytes(np.arange(4, dtype=np.uint8)))
    np.testing.assert_array_equal(ds.read_idx(path), [0, 1, 2, 3])


GOOD = idx_bytes(np.arange(6, dtype=np.int16).reshape(2, 3))     # 4 + 8 + 12 bytes


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("data, match", [
    (b"", r"truncated IDX header: expected 4 bytes .* got 0"),
    (b"\x00\x00\x08", r"truncated IDX header: expected 4 bytes .* got 3"),
    (b"\x01\x00" + GOOD[2:], r"not an IDX file: the first two bytes must be 00 00, "
                             r"got 01 00"),
    (b"\x00\x07" + GOOD[2:], r"first two bytes must be 00 00, got 00 07"),
    (b"\x00\x00\x0a" + GOOD[3:], r"unknown IDX type code 0x0A"),
    (b"\x00\x00\x0f" + GOOD[3:], r"unknown IDX type code 0x0F \(expected one of 0x08"),
    (b"\x00\x00\x08\x00", r"IDX dimension count is 0"),
    (GOOD[:10], r"truncated IDX header: 2 dimensions need 8 bytes .* got 6"),
    (GOOD[:-1], r"truncated IDX data: shape \(2, 3\) of int16 needs 12 bytes, got 11"),
    (GOOD[:12], r"truncated IDX data: .* needs 12 bytes, got 0"),
    (GOOD + b"\x00", r"1 unexpected bytes after the IDX data \(shape \(2, 3\)"),
    (GOOD + b"abc", r"3 unexpected bytes after the IDX data"),
    # A header claiming far more data than the file could hold: refused before any
    # allocation (no MemoryError).
    (bytes([0, 0, 0x0E, 3]) + b"\xff\xff\xff\xff" * 3, r"truncated IDX data: shape "
     r"\(4294967295, 4294967295, 4294967295\) of float64 needs \d+ bytes, "
     r"(got 0|more than a \d+-byte gzip file can hold)"),
], ids=["empty", "short-header", "magic-1", "magic-2", "type-0a", "type-0f", "ndim-0",
        "short-dims", "short-data", "no-data", "extra-1", "extra-3", "huge"])
def test_read_idx_malformed(tmp_path, compress, data, match):
    path = write(tmp_path / "bad", data, compress)
    with pytest.raises(ValueError, match=match) as info:
        ds.read_idx(path)
    assert str(path) in str(info.value)          # the message names the file


def test_read_idx_corrupt_gzip(tmp_path):
    blob = gzip.compress(GOOD * 50)
    cases = {
        "cut": blob[: len(blob) // 2],                     # stream ends early
        "crc": blob[:-8] + bytes([blob[-8] ^ 0xFF]) + blob[-7:],   # bad checksum
        "flipped": blob[:15] + bytes(b ^ 0x55 for b in blob[15:25]) + blob[25:],
        "header-only": blob[:10],
        "bad-method": blob[:2] + b"\x07" + blob[3:],        # not deflate
        "trailing-garbage": gzip.compress(GOOD) + b"garbage!",
    }
    for name, data in cases.items():
        path = write(tmp_path / name, data)
        with pytest.raises(ValueError, match=rf"^{path}: corrupt gzip data \(.+\)$"):
            ds.read_idx(path)


def test_read_idx_multi_member_gzip(tmp_path):
    # Concatenated gzip members are one valid stream (as `cat a.gz b.gz` makes).
    path = write(tmp_path / "two", gzip.compress(GOOD[:10]) + gzip.compress(GOOD[10:]))
    np.testing.assert_array_equal(ds.read_idx(path), np.arange(6).reshape(2, 3))


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        ds.read_idx(tmp_path / "nope")


# ------------------------------------------------------------------ load_idx_dataset

def mnist_like(tmp_path, rng, n=5, rows=4, cols=3, n_labels=None, compress=True,
               image_dtype=np.uint8, label_dtype=np.uint8):
    images = sample(image_dtype, (n, rows, cols), rng)
    labels = rng.integers(0, 10, size=n if n_labels is None else n_labels)
    labels = labels.astype(label_dtype)
    ip = write(tmp_path / "images", idx_bytes(images), compress)
    lp = write(tmp_path / "labels", idx_bytes(labels), compress)
    return ip, lp, images, labels


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_load_idx_dataset(tmp_path, rng, compress):
    ip, lp, images, labels = mnist_like(tmp_path, rng, compress=compress)
    X, y = ds.load_idx_dataset(ip, lp)
    assert X.shape == (5, 12) and X.dtype == np.float64
    assert y.shape == (5,) and y.dtype == np.int64
    np.testing.assert_array_equal(X, images.reshape(5, -1) / 255.0)
    assert X.min() >= 0 and X.max() <= 1
    np.testing.assert_array_equal(y, labels)


def test_load_idx_dataset_unscaled_for_other_dtypes(tmp_path, rng):
    ip, lp, images, _ = mnist_like(tmp_path, rng, image_dtype=np.float32,
                                   label_dtype=np.int32)
    X, y = ds.load_idx_dataset(ip, lp)
    np.testing.assert_array_equal(X, images.reshape(5, -1).astype(np.float64))
    assert y.dtype == np.int64


def test_load_idx_dataset_errors(tmp_path, rng):
    ip, lp, _, _ = mnist_like(tmp_path, rng, n=5, n_labels=4)
    with pytest.raises(ValueError, match=r"image count \(5 in .*images\) must equal the "
                                         r"label count \(4 in .*labels\)"):
        ds.load_idx_dataset(ip, lp)

    ip, lp, _, _ = mnist_like(tmp_path, rng, label_dtype=np.float32)
    with pytest.raises(ValueError, match=r"labels: labels must be a 1-D array of "
                                         r"integers, got shape \(5,\) of float32"):
        ds.load_idx_dataset(ip, lp)

    flat = write(tmp_path / "flat", idx_bytes(np.zeros(5, np.uint8)))
    labels = write(tmp_path / "lab", idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(ValueError, match=r"flat: images must have at least 2 dim"):
        ds.load_idx_dataset(flat, labels)
    two_d = write(tmp_path / "lab2", idx_bytes(np.zeros((5, 1), np.uint8)))
    with pytest.raises(ValueError, match=r"lab2: labels must be a 1-D array"):
        ds.load_idx_dataset(write(tmp_path / "img", idx_bytes(np.zeros((5, 2, 2),
                                                                       np.uint8))), two_d)

    write(tmp_path / "broken", b"\x00\x00\x08")
    with pytest.raises(ValueError, match="broken: truncated IDX header"):
        ds.load_idx_dataset(tmp_path / "broken", labels)
