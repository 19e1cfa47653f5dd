"""Kernel templates and their specialisation: the one mechanism behind the cpu and the
cuda kernels.

A *template* is a plain Python function whose free names include *slots*: module
globals declared as ``name = Slot("name", "what it is")``.  A slot stands for a formula
(``f``, ``df``), a helper kernel, a loop shape or a compile-time constant (tile sizes,
the float type).  :func:`specialise` makes a copy of the template's function object
whose globals bind every slot, and compiles it for a target (numba's cpu ``njit``, a
C-callable ``cfunc``, a cuda kernel or device function).  numba freezes bound globals as
compile-time constants, so each specialisation has its formula inlined and its sizes
fixed, and no source text is ever generated.

Why copies of the function and not closures: numba pickles a closure's cells into its
cache key, and a compiled formula pickles with a per-process identity, so every run
would miss the cache.  The copy keeps the template's code object, so numba's own cache
keys it by that code (its bytecode hash), by its name (``<template>__<tag>``, unique
per specialisation) and by the kernels' sources, through the locator registered in
:mod:`._numba_setup`.

Debugging: ``FASTNN_KERNEL_LOG=1`` prints one line per specialisation (its name, the
template's file and line, and what every slot is bound to) on stderr; :func:`describe`
returns the same text for a compiled kernel.
"""
import os
import sys
import types

_LOG = os.environ.get("FASTNN_KERNEL_LOG", "").strip() not in ("", "0")


class Slot:
    """A name a template reads as a global, bound per specialisation."""
    __slots__ = ("name", "doc")

    def __init__(self, name, doc):
        self.name, self.doc = name, doc

    def __call__(self, *args, **kwargs):
        raise TypeError(f"template slot {self.name!r} ({self.doc}) is unbound: call "
                        "the kernel that kernels.template.specialise() made, not the "
                        "template")

    def __repr__(self):
        return f"Slot({self.name!r})"


def slots_of(template):
    """The slots a template reads: its free global names bound to :class:`Slot`."""
    glb = template.__globals__
    return {n for n in template.__code__.co_names if isinstance(glb.get(n), Slot)}


_built = {}
_described = {}


def _show(value):
    name = getattr(value, "__qualname__", None) or getattr(value, "__name__", None)
    if name is None:
        py = getattr(value, "py_func", None) or getattr(value, "_pyfunc", None)
        name = getattr(py, "__qualname__", None)
    return name.replace(".<locals>", "") if name else repr(value)


def specialise(template, target, tag, **bindings):
    """The template compiled for ``target`` (a callable such as ``numba.njit(...)``,
    with a ``.name`` of its own for the memo) with every slot bound: built once per
    (template, target, tag), so ``tag`` must name what the bindings are (formula,
    float type, mode).  Every slot the template reads must be bound, and nothing else."""
    key = (template, target.name, tag)
    kernel = _built.get(key)
    if kernel is not None:
        return kernel
    declared = slots_of(template)
    unknown, missing = set(bindings) - declared, declared - set(bindings)
    if unknown or missing:
        raise TypeError(f"specialise({template.__name__}, {tag!r}): "
                        + (f"binds {sorted(unknown)}, not slots of the template; "
                           if unknown else "")
                        + (f"leaves {sorted(missing)} unbound" if missing else ""))
    glb = dict(template.__globals__, **bindings)
    fn = types.FunctionType(template.__code__, glb, template.__name__,
                            template.__defaults__, template.__closure__)
    fn.__qualname__ = f"{template.__name__}__{tag}"
    fn.__module__ = template.__module__
    fn.__doc__ = template.__doc__
    code = template.__code__
    text = (f"{fn.__qualname__} [{target.name}] from {os.path.basename(code.co_filename)}"
            f":{code.co_firstlineno}: "
            + ", ".join(f"{k}={_show(v)}" for k, v in sorted(bindings.items())))
    if _LOG:
        print(f"fastnn kernel: {text}", file=sys.stderr, flush=True)
    # Ctrl-C while a kernel is being built (a cfunc compiles here) takes effect once
    # it is built and memoised: numba is never left half-way (see _numba_setup).
    from ._numba_setup import deferred_sigint

    with deferred_sigint():
        kernel = target(fn)
        _described[id(kernel)] = text
        _built[key] = kernel
    return kernel


def describe(kernel):
    """What a kernel made by :func:`specialise` is: name, template and bindings."""
    return _described.get(id(kernel), repr(kernel))


class Target:
    """A compile target for :func:`specialise`: ``compile(fn)`` with a name."""
    __slots__ = ("name", "compile")

    def __init__(self, name, compile):
        self.name, self.compile = name, compile

    def __call__(self, fn):
        return self.compile(fn)
