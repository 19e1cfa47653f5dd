"""Small real data sets that work offline, a seeded train/test split, and a reader for
the IDX files MNIST ships in.

The three bundled data sets are copies of the files scikit-learn ships (BSD-3-Clause);
their origins and licences are in ``fastnn/data/LICENSE.md``.  scikit-learn is not
needed at run time; the tests check that the arrays equal scikit-learn's loaders'.

>>> from fastnn.datasets import load_digits, train_test_split
>>> X, y = load_digits()
>>> X_train, X_test, y_train, y_test = train_test_split(X / 16, y, test_size=0.2, seed=0)
"""
import gzip
import io
import numbers
import os
import zlib
from importlib import resources

import numpy as np

from .fileformat import open_regular

__all__ = ["load_digits", "load_breast_cancer", "load_diabetes", "train_test_split",
           "read_idx", "load_idx_dataset"]


# --------------------------------------------------------------------------- bundled data

def _open_data(name):
    """A text stream over the gzip-compressed file ``fastnn/data/<name>``.

    importlib.resources rather than a path next to __file__, so the data is found however
    the package was installed (wheel, editable, zip)."""
    raw = (resources.files("fastnn") / "data" / name).open("rb")
    return io.TextIOWrapper(gzip.GzipFile(fileobj=raw), encoding="utf-8")


def _loadtxt(name, **kwargs):
    with _open_data(name) as f:
        return np.loadtxt(f, dtype=np.float64, **kwargs)


def _expect_shape(array, shape, name):
    # The files are fixed; a wrong shape means a damaged install, not a user error.
    if array.shape != shape:
        raise RuntimeError(f"fastnn/data/{name} is damaged: expected shape {shape}, "
                           f"got {array.shape}; reinstall fastnn")


def load_digits():
    """The UCI handwritten digits (optical recognition, test set): 1797 images of 8x8.

    Returns ``(X, y)``:

    - ``X``: float64, shape (1797, 64), C-contiguous; each row an 8x8 image flattened
      row by row, pixel values are integers 0..16 (the count of "on" pixels in a 4x4
      block of the original 32x32 bitmap).  Divide by 16 to get [0, 1].
    - ``y``: int64, shape (1797,), the digit 0..9 (about 180 of each).

    Equal to ``sklearn.datasets.load_digits(return_X_y=True)`` (same rows, same order).

    Source: E. Alpaydin, C. Kaynak, "Optical Recognition of Handwritten Digits", UCI
    Machine Learning Repository (1998), through scikit-learn's bundled ``digits.csv.gz``
    (BSD-3-Clause).  See ``fastnn/data/LICENSE.md``.
    """
    data = _loadtxt("digits.csv.gz", delimiter=",")
    _expect_shape(data, (1797, 65), "digits.csv.gz")
    # The last column is the label; copy the pixels so X is C-contiguous, as forward needs.
    return np.ascontiguousarray(data[:, :-1]), data[:, -1].astype(np.int64)


def load_breast_cancer():
    """Breast Cancer Wisconsin (Diagnostic): 569 tumours, 30 real-valued features.

    Returns ``(X, y)``:

    - ``X``: float64, shape (569, 30): the mean (columns 0-9), standard error (10-19)
      and "worst" value (20-29) of ten cell-nucleus measurements from a digitised
      fine-needle-aspirate image: radius, texture, perimeter, area, smoothness,
      compactness, concavity, concave points, symmetry, fractal dimension.  The scales
      differ widely (area up to ~4254, fractal dimension ~0.05), so standardise first.
    - ``y``: int64, shape (569,): **0 = malignant** (212), **1 = benign** (357), the
      same coding as ``sklearn.datasets.load_breast_cancer`` (``target_names =
      ['malignant', 'benign']``).

    Equal to ``sklearn.datasets.load_breast_cancer(return_X_y=True)``.

    Source: W. H. Wolberg, W. N. Street, O. L. Mangasarian, "Breast Cancer Wisconsin
    (Diagnostic)", UCI Machine Learning Repository (1995), through scikit-learn's bundled
    ``breast_cancer.csv`` (BSD-3-Clause), stored gzip-compressed.  See
    ``fastnn/data/LICENSE.md``.
    """
    name = "breast_cancer.csv.gz"
    # First line "569,30,malignant,benign": the shape and the class names, in label order.
    data = _loadtxt(name, delimiter=",", skiprows=1)
    _expect_shape(data, (569, 31), name)
    return np.ascontiguousarray(data[:, :-1]), data[:, -1].astype(np.int64)


def load_diabetes(scaled=True):
    """The diabetes data of Efron, Hastie, Johnstone & Tibshirani (2004): 442 patients.

    Returns ``(X, y)``:

    - ``X``: float64, shape (442, 10): age, sex, body mass index, average blood
      pressure and six blood serum measurements (s1 total cholesterol, s2 LDL, s3 HDL,
      s4 total/HDL, s5 log of serum triglycerides (possibly), s6 blood sugar).
    - ``y``: float64, shape (442,): a quantitative measure of disease progression one
      year after baseline (25..346), a regression target.

    ``scaled=True`` (the default) gives what ``sklearn.datasets.load_diabetes()`` gives:
    each column centred to mean 0 and divided by its standard deviation times
    sqrt(442), so that each column's sum of squares is 1.  ``scaled=False`` gives the
    raw values (age in years, sex coded 1/2, ...).  The target is never scaled.

    Source: B. Efron, T. Hastie, I. Johnstone, R. Tibshirani, "Least Angle Regression",
    Annals of Statistics 32(2) (2004), 407-499; data from
    https://www4.stat.ncsu.edu/~boos/var.select/diabetes.html, through scikit-learn's
    bundled ``diabetes_data_raw.csv.gz`` / ``diabetes_target.csv.gz`` (BSD-3-Clause).
    See ``fastnn/data/LICENSE.md``.
    """
    if not isinstance(scaled, (bool, np.bool_)):
        raise TypeError(f"scaled must be True or False, got {scaled!r}")
    X = _loadtxt("diabetes_data_raw.csv.gz")          # whitespace-separated
    y = _loadtxt("diabetes_target.csv.gz")
    _expect_shape(X, (442, 10), "diabetes_data_raw.csv.gz")
    _expect_shape(y, (442,), "diabetes_target.csv.gz")
    if scaled:
        # scikit-learn's recipe, step for step (preprocessing.scale, then / sqrt(n)), so
        # the values agree to the last bit: the standard deviation (ddof 0) is taken
        # before centring, then centre, divide, divide.
        mean, std = X.mean(axis=0), X.std(axis=0)
        X -= mean
        X /= std
        X /= X.shape[0] ** 0.5
    return X, y


# --------------------------------------------------------------------------- splitting

def train_test_split(X, y, test_size=0.2, seed=0):
    """Shuffle the rows with ``np.random.default_rng(seed).permutation`` and split them.

    - ``X``: array-like with the samples along the first axis; ``y``: array-like of the
      same length.  Neither is copied into another dtype.
    - ``test_size``: a fraction in (0, 1) (the test set gets ``ceil(test_size * n)``
      rows, as in scikit-learn) or an int count in [1, n - 1].  Both sides get at least
      one row.
    - ``seed``: an int (or None for a fresh, unrepeatable shuffle).

    Returns ``(X_train, X_test, y_train, y_test)``, scikit-learn's order.  The first
    ``n_test`` positions of the permutation are the test rows, the rest the training
    rows, each in permuted order.  (The same order as scikit-learn's ShuffleSplit, but
    not the same rows for a given seed: scikit-learn uses the legacy RandomState.)
    """
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim == 0 or y.ndim == 0:
        raise ValueError(f"X and y must be arrays with samples along the first axis, got "
                         f"shapes X {X.shape} and y {y.shape}")
    n = X.shape[0]
    if y.shape[0] != n:
        raise ValueError(f"X and y must have the same number of samples, got "
                         f"{n} (X) and {y.shape[0]} (y)")
    if n < 2:
        raise ValueError(f"X must hold at least 2 samples to split into a training and a "
                         f"test set, got {n}")
    n_test = _test_count(test_size, n)
    order = np.random.default_rng(seed).permutation(n)
    test, train = order[:n_test], order[n_test:]
    return X[train], X[test], y[train], y[test]


def _test_count(test_size, n):
    if isinstance(test_size, (bool, np.bool_)):
        pass                                           # True would pass as the int 1
    elif isinstance(test_size, numbers.Integral):
        if 1 <= test_size <= n - 1:
            return int(test_size)
        raise ValueError(f"test_size as an int count must be in [1, {n - 1}] (n = {n} "
                         f"samples), got {test_size}")
    elif isinstance(test_size, numbers.Real):
        if 0 < test_size < 1:
            n_test = int(np.ceil(test_size * n))
            if n_test >= n:       # e.g. 0.99 of 10 rows would leave no training row
                raise ValueError(f"test_size={test_size} of {n} samples leaves no "
                                 f"training sample; use a smaller fraction")
            return n_test
        raise ValueError(f"test_size as a fraction must be in (0, 1), got {test_size}")
    raise ValueError(f"test_size must be a fraction in (0, 1) or an int count in "
                     f"[1, {n - 1}], got {test_size!r}")


# --------------------------------------------------------------------------- IDX files

# The IDX type byte -> the element dtype as stored (big-endian).
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
# Deflate cannot compress better than about 1032:1, so a gzip file of c bytes cannot hold
# more than ~1032*c bytes (a multi-member gzip file, too).
_MAX_GZIP_RATIO = 1100
# NumPy's limit on an array's dimensions (32 before NumPy 2).
_MAX_NDIM = 64 if int(np.__version__.split(".")[0]) >= 2 else 32
_CHUNK = 1 << 20


def read_idx(path):
    """Read an IDX file (the format of the MNIST files), plain or gzip-compressed.

    The format (http://yann.lecun.com/exdb/mnist/): two zero bytes, a type byte
    (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), the
    number of dimensions (one byte, at least 1), each dimension as a big-endian uint32,
    then the elements, big-endian, in C order.  Gzip compression is recognised by the
    file's first bytes (1f 8b), not its name.

    Returns a writable NumPy array of that dtype in native byte order and that shape,
    e.g. uint8 of shape (60000, 28, 28) for ``train-images-idx3-ubyte.gz``.

    A dimension may be 0: the file then holds no items and the array is empty.

    Raises ``ValueError`` naming the file for anything that is not a well-formed IDX
    file: not a regular file (a named pipe or a device, refused without blocking),
    non-zero magic bytes, an unknown type code, zero dimensions or more than NumPy
    allows (64), a truncated header, fewer data bytes than the dimensions need or bytes
    left over after them, a corrupt gzip stream.  The declared size is checked against
    the file's real size (a gzip file's, times deflate's greatest ratio) before anything
    is allocated or read.  ``OSError`` (e.g. FileNotFoundError) passes through.
    """
    name = os.fspath(path)
    # Only a regular file: a named pipe would block, a device could be endless.
    with open_regular(name, lambda message: ValueError(f"{name}: {message}")) as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        size = os.fstat(raw.fileno()).st_size
        if not compressed:
            return _read_idx_stream(raw, name, size, compressed=False)
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                return _read_idx_stream(f, name, size, compressed=True)
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:
            # EOFError: the compressed stream ends early; zlib.error / BadGzipFile: bad
            # bytes or a CRC/length mismatch in the trailer.
            raise ValueError(f"{name}: corrupt gzip data ({e})") from None


def _read_exactly(f, array):
    """Fill the C-contiguous ``array``'s memory from ``f``; return how many bytes were
    read (fewer than its size only at end of file)."""
    view, got = memoryview(array.reshape(-1).view(np.uint8)), 0
    while got < len(view):
        k = f.readinto(view[got:])
        if not k:
            break
        got += k
    return got


def _read_idx_stream(f, name, file_size, compressed):
    head = f.read(4)
    if len(head) < 4:
        raise ValueError(f"{name}: truncated IDX header: expected 4 bytes (magic, type, "
                         f"dimension count), got {len(head)}")
    if head[0] != 0 or head[1] != 0:
        raise ValueError(f"{name}: not an IDX file: the first two bytes must be 00 00, "
                         f"got {head[:2].hex(' ')}")
    type_code, ndim = head[2], head[3]
    if type_code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise ValueError(f"{name}: unknown IDX type code 0x{type_code:02X} (expected one "
                         f"of {known})")
    if ndim == 0:
        raise ValueError(f"{name}: IDX dimension count is 0 (expected at least 1)")
    if ndim > _MAX_NDIM:
        raise ValueError(f"{name}: IDX dimension count is {ndim}; a NumPy array has at "
                         f"most {_MAX_NDIM}")
    dims = f.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise ValueError(f"{name}: truncated IDX header: {ndim} dimensions need "
                         f"{4 * ndim} bytes after the first 4, got {len(dims)}")
    shape = tuple(int(d) for d in np.frombuffer(dims, dtype=">u4"))
    stored = _IDX_DTYPES[type_code]
    # Python ints: the product of four uint32s may not fit in 64 bits.
    count = 1
    for d in shape:
        count *= d
    nbytes = count * stored.itemsize
    # Checked before allocating, so a header that claims a huge array in a small file is
    # reported as truncated instead of failing with MemoryError.
    header = 4 + 4 * ndim
    if not compressed and header + nbytes > file_size:
        raise ValueError(f"{name}: truncated IDX data: shape {shape} of {stored.name} "
                         f"needs {nbytes} bytes, got {file_size - header}")
    if not compressed and header + nbytes < file_size:
        raise ValueError(f"{name}: {file_size - header - nbytes} unexpected bytes after "
                         f"the IDX data (shape {shape} of {stored.name} is {nbytes} "
                         f"bytes)")
    if compressed and header + nbytes > _MAX_GZIP_RATIO * file_size + 1024:
        raise ValueError(f"{name}: truncated IDX data: shape {shape} of {stored.name} "
                         f"needs {nbytes} bytes, more than a {file_size}-byte gzip file "
                         f"can hold")
    # Read straight into the array's memory: no intermediate bytes object.
    out = np.empty(shape, dtype=stored)
    got = _read_exactly(f, out)
    if got < nbytes:
        raise ValueError(f"{name}: truncated IDX data: shape {shape} of {stored.name} "
                         f"needs {nbytes} bytes, got {got}")
    # Anything left over is an error (a plain file's size was checked above).  For gzip
    # this read reaching the end of the stream is also what checks the CRC; leftover
    # data is reported after one chunk, not inflated to its end (it may be a bomb).
    rest = len(f.read(_CHUNK)) if compressed else 0
    if rest:
        more = "at least " if rest == _CHUNK else ""
        raise ValueError(f"{name}: {more}{rest} unexpected bytes after the IDX data "
                         f"(shape {shape} of {stored.name} is {nbytes} bytes)")
    if not stored.isnative:
        # Swap the bytes in place and relabel the dtype: native order without a copy.
        out = out.byteswap(inplace=True).view(stored.newbyteorder("="))
    return out


def load_idx_dataset(images_path, labels_path):
    """Load an MNIST-style pair of IDX files (plain or gzip) as ``(X, y)``.

    - ``images_path``: an IDX file of shape (n, ...), e.g. (n, rows, cols).  ``X`` is
      float64 of shape (n, rows*cols); uint8 images are divided by 255 so pixels lie in
      [0, 1]; other dtypes keep their values.
    - ``labels_path``: an IDX file of n integer labels, shape (n,).  ``y`` is int64.

    Raises ``ValueError`` (naming the file) if either file is malformed (see
    :func:`read_idx`), the images hold no data (zero samples or zero values each), the
    labels are not a 1-D integer array, or the counts differ.
    """
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim < 2:
        raise ValueError(f"{os.fspath(images_path)}: images must have at least 2 "
                         f"dimensions (n, ...), got shape {images.shape}")
    # A valid IDX file may hold no items (read_idx returns the empty array), but a data
    # set without samples, or samples without features, cannot be trained on.
    if images.size == 0:
        raise ValueError(f"{os.fspath(images_path)}: the images hold no data (shape "
                         f"{images.shape}); a data set needs at least one sample of at "
                         f"least one value")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"{os.fspath(labels_path)}: labels must be a 1-D array of "
                         f"integers, got shape {labels.shape} of {labels.dtype}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"the image count ({images.shape[0]} in "
                         f"{os.fspath(images_path)}) must equal the label count "
                         f"({labels.shape[0]} in {os.fspath(labels_path)})")
    flat = images.reshape(images.shape[0], -1)
    if images.dtype == np.uint8:
        X = np.divide(flat, 255.0, dtype=np.float64)    # one pass, no float64 temporary
    else:
        X = flat.astype(np.float64)
    return X, labels.astype(np.int64)
