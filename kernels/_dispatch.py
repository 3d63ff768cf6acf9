"""Backend selection shared by every kernel wrapper in ``qvggt_kernels``.

Every public function takes ``backend="auto" | "triton" | "torch" | "cpu"``:

* ``"torch"``  always runs the pure-PyTorch ``*_reference`` (any device).
* ``"triton"`` always runs the Triton kernel. On CUDA tensors this is the compiled
  kernel; on CPU tensors it is Triton's *interpreter* (numpy emulation of the kernel,
  slow, for teaching and testing).
* ``"cpu"``    CPU tensors only, the fast CPU path: the GEMMs run ``torch._int_mm`` (oneDNN's
  int8 GEMM, int32 accumulation) and the reference epilogue, the reference's result bit for
  bit; the activation quantization's FWHT runs as two small matmuls (``fwht_kronecker``, equal
  to the butterflies to fp32 rounding); everything else runs the torch reference.
* ``"auto"``   picks Triton when a tensor is on CUDA or when the environment variable
  ``TRITON_INTERPRET=1`` is set, ``"cpu"`` for CPU tensors otherwise.

Why the interpreter needs help. ``@triton.jit`` decides *at decoration time* (module
import) whether it builds a compiled ``JITFunction`` or an ``InterpretedFunction``,
depending on ``TRITON_INTERPRET``. If this package was imported before that variable was
set (e.g. by another test module), the kernels are ``JITFunction`` objects that cannot run
on CPU tensors. ``launchable`` therefore rebuilds an interpreted copy of a kernel on
demand, together with the ``@triton.jit`` helpers it calls, without touching the
compiled objects that a CUDA launch would use. Every interpreted launch also undoes the
interpreter's patches of ``triton.language`` afterwards, so interpreted runs and real
compilations (``tests/kernels/test_kernel_compile_sm90.py``) can share one process.

This is plumbing, not part of the lesson: the kernel files never need to know about it.
"""

from __future__ import annotations

import contextlib
import os
import types
from collections.abc import Iterable

import torch

try:  # Triton is a Linux-only dependency; the torch references work without it.
    import triton
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised only on machines without Triton
    triton = None
    InterpretedFunction = JITFunction = ()  # isinstance(x, ()) is always False
    HAS_TRITON = False

BACKENDS = ("auto", "triton", "torch", "cpu")


def interpret_env() -> bool:
    """True when ``TRITON_INTERPRET`` is set to a true value right now."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def _use_triton(tensors: Iterable[torch.Tensor | None], backend: str) -> bool:
    """Decide whether a call runs the Triton kernel (True) or the torch reference (False).

    Args:
        tensors: the call's tensor arguments (``None`` entries are ignored).
        backend: one of ``BACKENDS``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "cpu" and any(t is not None and t.device.type != "cpu" for t in tensors):
        raise ValueError("backend='cpu' runs CPU tensors; use 'auto' or 'triton' on a GPU")
    if backend in ("torch", "cpu"):
        return False
    if backend == "triton":
        if not HAS_TRITON:
            raise RuntimeError("backend='triton' needs the triton package; use backend='torch'")
        return True
    if not HAS_TRITON:
        return False
    on_cuda = any(t is not None and t.is_cuda for t in tensors)
    return on_cuda or interpret_env()


def check_same_device(**tensors: torch.Tensor | None) -> torch.device:
    """All given tensors must live on one device; returns it."""
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        raise ValueError(f"all tensors must be on the same device, got {devices}")
    return next(iter(devices.values()))


def check_contiguous(**tensors: torch.Tensor | None) -> None:
    for name, t in tensors.items():
        if t is not None and not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous (call .contiguous() first)")


def check_dtype(name: str, t: torch.Tensor, allowed: tuple) -> None:
    if t.dtype not in allowed:
        names = ", ".join(str(d).replace("torch.", "") for d in allowed)
        raise TypeError(f"{name} must have dtype {names}; got {str(t.dtype).replace('torch.', '')}")


# --------------------------------------------------------------------------------------
# Running a kernel: compiled on CUDA, interpreted on CPU
# --------------------------------------------------------------------------------------
_INTERPRETED: dict = {}


def _interpreted(kernel):
    """An ``InterpretedFunction`` twin of a ``@triton.jit`` kernel (cached).

    The interpreter executes the kernel's Python source in the function's globals, so a
    helper ``@triton.jit`` function referenced there must be interpreted too. We clone the
    Python function with a private copy of its globals in which every ``JITFunction`` is
    replaced by its interpreted twin (recursively).
    """
    if isinstance(kernel, InterpretedFunction):
        return kernel
    if id(kernel) in _INTERPRETED:  # keyed by id: hashing a JITFunction hashes its source
        return _INTERPRETED[id(kernel)][1]
    fn = kernel.fn
    new_globals = dict(fn.__globals__)
    clone = types.FunctionType(
        fn.__code__, new_globals, fn.__name__, fn.__defaults__, fn.__closure__
    )
    clone.__module__ = fn.__module__
    clone.__qualname__ = fn.__qualname__
    twin = InterpretedFunction(clone)
    _INTERPRETED[id(kernel)] = (kernel, twin)  # register before recursing: globals are cyclic
    for name, value in fn.__globals__.items():
        if isinstance(value, JITFunction):
            new_globals[name] = _interpreted(value)
    return twin


class _InterpretedLaunch:
    """``kernel[grid](...)`` through Triton's interpreter, with two repairs:

    * if triton was imported without ``TRITON_INTERPRET``, triton.language's own ``@jit``
      helpers (``tl.max``, ...) are compiled-only objects: interpreted twins stand in for
      them during the launch;
    * the interpreter patches ``triton.language`` while it runs, and a nested ``@jit``
      call (our ``fwht_block``, ``tl.max``) never undoes its patches. Left in place they
      break every later *compilation* in the process, so we undo them all afterwards.
    """

    def __init__(self, twin):
        self.twin = twin

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            with _contained_interpreter_patches(), _interpreted_stdlib():
                return self.twin[grid](*args, **kwargs)

        return launch


_STDLIB_TWINS: dict = {}


@contextlib.contextmanager
def _interpreted_stdlib():
    import triton.language as tl

    saved = {}
    for name in dir(tl):
        value = getattr(tl, name)
        if isinstance(value, JITFunction):
            if name not in _STDLIB_TWINS:
                _STDLIB_TWINS[name] = InterpretedFunction(value.fn)
            saved[name] = value
            setattr(tl, name, _STDLIB_TWINS[name])
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(tl, name, value)


_ABSENT = object()


@contextlib.contextmanager
def _contained_interpreter_patches():
    """Record the first original of every attribute the interpreter patches; restore all."""
    from triton.runtime import interpreter

    scope_cls = getattr(interpreter, "_LangPatchScope", None)
    if scope_cls is None:  # older Triton: nothing to hook into
        yield
        return
    set_attr = scope_cls.set_attr
    originals: dict = {}

    def recording_set_attr(self, obj, name, value):
        if (id(obj), name) not in originals:
            originals[(id(obj), name)] = (obj, name, vars(obj).get(name, _ABSENT))
        set_attr(self, obj, name, value)

    scope_cls.set_attr = recording_set_attr
    try:
        yield
    finally:
        scope_cls.set_attr = set_attr
        for obj, name, original in reversed(list(originals.values())):
            if original is not _ABSENT:
                setattr(obj, name, original)
            elif name in vars(obj):
                delattr(obj, name)


def launchable(kernel, *tensors: torch.Tensor | None):
    """The object to launch as ``obj[grid](...)``: compiled for CUDA, interpreted for CPU."""
    on_cuda = any(t is not None and t.is_cuda for t in tensors)
    if on_cuda and not interpret_env() and not isinstance(kernel, InterpretedFunction):
        return kernel
    return _InterpretedLaunch(_interpreted(kernel))


def is_interpreted(kernel) -> bool:
    """True when ``kernel`` (as returned by ``launchable``) runs in the interpreter."""
    return isinstance(kernel, _InterpretedLaunch)
