"""Data-parallel training over MPI: every process trains on its share of each global
batch, and every process takes the same update as one process on the whole batch.

Install mpi4py and an MPI (``pip install 'fastnn[mpi]' mpich``, or mpi4py built
against a cluster's own MPI) and launch with ``mpiexec -n N python -m mpi4py
script.py`` (``-m mpi4py`` aborts the whole job when one process raises, instead of
leaving the others waiting in a collective forever)::

    import fastnn as fn
    from fastnn import distributed as dist

    dp = dist.DataParallel(model)           # broadcasts rank 0's weights
    model.fit(X, y, loss="cross_entropy", optimizer="adam", batch_size=1024, seed=0,
              distributed=dp)               # rank 0 draws the progress bar

How (``fastnn.training.loop`` drives it): every rank holds the whole data set and
walks the same global batches (the same shuffle, from the same seed); a batch of B
rows is cut into ``size`` contiguous shards as ``numpy.array_split`` cuts it (a short
last batch can leave a rank with no rows: it still joins the collective).  Each rank
back-propagates its rows with the micro-batch weights m / B of fit's exact
accumulation, so the ranks' gradient buffers sum to the batch's mean gradient; one
collective on the flat gradient buffer makes every rank hold that sum, and every rank
then clips, schedules and steps identically.

Reductions:

- ``"allreduce"``: one in-place ``Allreduce`` (MPI_SUM) of the flat gradient buffer, no
  copy for host buffers.  The weights equal one process on the global batch to
  rounding (1e-12 relative in float64, tested), and every rank holds the same bits
  (IEEE addition is commutative, and MPI's reduction gives every rank one result).
- ``"ordered"``: bitwise identical weights for ANY number of processes.  Each global
  batch is cut into a fixed grid of chunks of ``chunk_rows`` rows (independent of the
  process count), each chunk's gradient is computed on its own (from zero), and the
  chunks are summed strictly left to right: rank 0 adds its chunks, passes the partial
  sum to rank 1, which adds its own, and so on; the last rank broadcasts the total.
  The loss sums travel with it.  Its cost (N - 1 sequential messages of the buffer,
  and a backward pass per chunk) is measured by ``bench/distributed_scaling.py``.

The cuda backend's gradient buffer is staged through one host buffer per model (one
copy each way per step; CUDA-aware MPI is not assumed).
"""
import hashlib

import numpy as np

from . import _checks
from ._version import __version__

REDUCTIONS = ("allreduce", "ordered")
_STATE = {"comm": None}


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(
            "fastnn.distributed needs mpi4py and an MPI library: pip install "
            "'fastnn[mpi]' mpich (or build mpi4py against your cluster's MPI), then "
            "launch with mpiexec -n N python -m mpi4py your_script.py") from exc
    return MPI


def init(comm=None):
    """Set the communicator fastnn uses (default ``MPI.COMM_WORLD``) and return it."""
    MPI = _mpi()
    comm = MPI.COMM_WORLD if comm is None else comm
    if not isinstance(comm, MPI.Comm):
        raise TypeError(f"comm must be an mpi4py communicator, got {type(comm).__name__}")
    _STATE["comm"] = comm
    return comm


def _comm(comm=None):
    if comm is not None:
        return comm
    return _STATE["comm"] if _STATE["comm"] is not None else init()


def rank(comm=None):
    """This process's rank (0 .. size - 1)."""
    return _comm(comm).Get_rank()


def size(comm=None):
    """The number of processes."""
    return _comm(comm).Get_size()


def _bcast_buffer(comm, backend, buf, root):
    """Broadcast a backend array in place (through the host for device arrays)."""
    if isinstance(buf, np.ndarray):
        comm.Bcast(buf, root=root)
    else:
        host = np.ascontiguousarray(backend.to_numpy(buf))
        comm.Bcast(host, root=root)
        backend.from_numpy(host, out=buf)


def broadcast_parameters(model, root=0, optimizer=None, comm=None):
    """Give every rank ``root``'s weights (one ``Bcast`` of the flat parameter buffer)
    and, with ``optimizer``, its state buffers and step counter."""
    comm = _comm(comm)
    _bcast_buffer(comm, model.backend, model.flat_params, root)
    if optimizer is not None:
        for name in sorted(optimizer.state):
            _bcast_buffer(comm, model.backend, optimizer.state[name], root)
        optimizer.step_count = comm.bcast(optimizer.step_count, root=root)


def _shard_bounds(rows, parts, which):
    """[lo, hi) of part ``which`` of ``rows`` rows cut into ``parts`` contiguous parts
    as numpy.array_split cuts them (the first rows % parts parts one row longer)."""
    base, extra = divmod(rows, parts)
    lo = which * base + min(which, extra)
    return lo, lo + base + (1 if which < extra else 0)


class DataParallel:
    """Data parallelism for one model over ``comm`` (default: :func:`init`'s)."""

    def __init__(self, model, comm=None, reduction="allreduce", chunk_rows=64,
                 broadcast=True):
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        if not hasattr(model, "flat_grads"):
            raise TypeError(f"model must be a fastnn model, got {type(model).__name__}")
        self.model = model
        self.comm = _comm(comm)
        self.reduction = reduction
        self.chunk_rows = _checks.positive_int(chunk_rows, "chunk_rows")
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self._host = None              # the cuda backend's staging buffer
        if broadcast:
            broadcast_parameters(model, comm=self.comm)

    # -- batches and shards ----------------------------------------------------------
    def common_seed(self, seed=None):
        """``seed``, or (None) one drawn on rank 0 and sent to every rank."""
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % (2**63)) if self.rank == 0 \
                else None
            seed = self.comm.bcast(seed, root=0)
        return seed

    def global_batches(self, n, batch_size, seed=None, shuffle=True):
        """The global batches of an epoch over ``n`` samples, the same list on every
        rank: index arrays of ``batch_size`` rows (the last one shorter), from a
        permutation drawn with ``seed`` (rank 0's draw, sent to all, when None)."""
        n = _checks.positive_int(n, "n")
        batch_size = _checks.positive_int(batch_size, "batch_size")
        order = np.random.default_rng(self.common_seed(seed)).permutation(n) \
            if shuffle else np.arange(n)
        return [order[lo:lo + batch_size] for lo in range(0, n, batch_size)]

    def shard(self, batch_indices):
        """This rank's rows of a global batch (possibly none)."""
        lo, hi = _shard_bounds(len(batch_indices), self.size, self.rank)
        return batch_indices[lo:hi]

    def shard_range(self, start, stop):
        """This rank's [lo, hi) of the global batch [start, stop)."""
        lo, hi = _shard_bounds(stop - start, self.size, self.rank)
        return start + lo, start + hi

    def chunk_ranges(self, start, stop):
        """The ordered reduction's grid: the chunks of [start, stop) of
        ``chunk_rows`` rows, and which of them (a contiguous run) are this rank's."""
        chunks = [(lo, min(lo + self.chunk_rows, stop))
                  for lo in range(start, stop, self.chunk_rows)]
        lo, hi = _shard_bounds(len(chunks), self.size, self.rank)
        return chunks, lo, hi

    # -- reductions ------------------------------------------------------------------
    def _host_grads(self):
        """The flat gradient buffer on the host: itself for host backends, else the
        model's one staging buffer with the device's values copied in."""
        g = self.model.flat_grads
        if isinstance(g, np.ndarray):
            return g
        if self._host is None:
            self._host = np.empty(g.shape, self.model.dtype)
        self._host[...] = self.model.backend.to_numpy(g)
        return self._host

    def _put_grads(self, host):
        g = self.model.flat_grads
        if host is not g:
            self.model.backend.from_numpy(host, out=g)

    def reduce_gradients(self):
        """Sum the ranks' flat gradient buffers into every rank's, in place: one
        ``Allreduce`` (the "allreduce" reduction; the ordered one goes through
        :meth:`ordered_sum`)."""
        MPI = _mpi()
        host = self._host_grads()
        self.comm.Allreduce(MPI.IN_PLACE, host, op=MPI.SUM)
        self._put_grads(host)

    def allreduce_sums(self, values):
        """The element-wise sum over ranks of a small float64 vector (loss totals)."""
        MPI = _mpi()
        values = np.ascontiguousarray(values, np.float64)
        self.comm.Allreduce(MPI.IN_PLACE, values, op=MPI.SUM)
        return values

    def ordered_sum(self, grads, sums, width=3):
        """Left-to-right sum over the chunk grid: ``grads`` are this rank's chunks'
        gradients and ``sums`` their ``width`` loss totals (fit: loss, correct,
        counted), in chunk order.  Rank r
        receives the running sums from rank r - 1, adds its own chunks one by one and
        sends them on; the last rank's totals are broadcast.  The flat gradient buffer
        then holds the total on every rank; returns the totals of ``sums``."""
        comm, model = self.comm, self.model
        acc = np.zeros(model.num_parameters, model.dtype)
        tot = np.zeros(width, np.float64)
        if self.rank > 0:
            comm.Recv(acc, source=self.rank - 1, tag=11)
            comm.Recv(tot, source=self.rank - 1, tag=12)
        for g, s in zip(grads, sums):
            acc += g
            tot += np.asarray(s, np.float64)
        if self.rank < self.size - 1:
            comm.Send(acc, dest=self.rank + 1, tag=11)
            comm.Send(tot, dest=self.rank + 1, tag=12)
        comm.Bcast(acc, root=self.size - 1)
        comm.Bcast(tot, root=self.size - 1)
        self._put_grads(acc)
        return tot

    # -- the preflight ---------------------------------------------------------------
    def preflight(self, **config):
        """Compare ``config`` (and the model's shape, dtype, fastnn's version and a
        digest of the weights) across ranks; raise the same ValueError on every rank
        when they differ, naming what differs on which ranks, instead of hanging in a
        collective later."""
        model = self.model
        params = np.ascontiguousarray(model.to_numpy(model.flat_params))
        mine = dict(config, parameters=int(model.num_parameters),
                    dtype=str(model.dtype), fastnn=__version__,
                    reduction=self.reduction, chunk_rows=self.chunk_rows,
                    weights=hashlib.sha256(params.tobytes()).hexdigest()[:16])
        everyone = self.comm.allgather(mine)
        wrong = []
        for key in mine:
            values = [d.get(key) for d in everyone]
            if any(v != values[0] for v in values):
                shown = ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(values))
                wrong.append(f"{key} ({shown})")
        if wrong:
            hint = " (call fastnn.distributed.broadcast_parameters first)" \
                if any(w.startswith("weights") for w in wrong) else ""
            raise ValueError("distributed training: the ranks differ in "
                             + "; ".join(wrong) + hint)


def check(distributed, model):
    """Validate fit's ``distributed`` argument (None or a DataParallel of ``model``)."""
    if distributed is None:
        return None
    if not isinstance(distributed, DataParallel):
        raise TypeError(f"distributed must be a fastnn.distributed.DataParallel, got "
                        f"{type(distributed).__name__}")
    if distributed.model is not model:
        raise ValueError("distributed must be a DataParallel of this model")
    return distributed
