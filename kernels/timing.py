"""Benchmark timing: the median milliseconds of timed calls after warm-up, and peak memory.

Shared by ``qvggt_kernels.bench`` and ``qvggt_lib.deploy.bench``.
``measure(fn, warmup, iters, device)`` calls ``fn()`` ``warmup`` times untimed, then ``iters``
times, each call timed on its own, and returns ``(median ms, peak bytes or None)``:

* CUDA: two CUDA events around each call (the GPU's clock), then ``torch.cuda.synchronize``
  before the next call. The peak is ``torch.cuda.max_memory_allocated`` after a reset just
  before the timed calls: everything allocated on that device, inputs and weights included.
* anything else: ``time.perf_counter`` around each call; the peak is None (there are no
  allocator statistics for CPU tensors). ``cpu_peak_bytes(fn)`` measures what one call
  allocates at its peak, from the profiler's allocation and free events.

A timed CUDA call includes the host's launch time when the GPU has nothing queued before it.
``before`` (called untimed before each timed call) can queue such work, e.g. ``l2_flush``,
as ``triton.testing.do_bench`` does.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def measure(
    fn: Callable[[], object],
    warmup: int = 3,
    iters: int = 10,
    device: str | torch.device = "cpu",
    *,
    before: Callable[[], object] | None = None,
) -> tuple[float, int | None]:
    """Time ``fn()``: (median ms of ``iters`` calls after ``warmup`` untimed ones, peak bytes).

    Args:
        fn: the work, called with no arguments; each result is dropped after its call.
        warmup: untimed calls first (compilation, autotuning, allocator warm-up), >= 0.
        iters: timed calls, >= 1.
        device: where ``fn`` runs. CUDA: events around each call, and the peak of
            ``torch.cuda.max_memory_allocated`` over the timed calls; otherwise
            ``time.perf_counter`` and a peak of None.
        before: optional, called before each timed call, outside the timed region.
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    device = torch.device(device)
    if device.type != "cuda":
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(iters):
            if before is not None:
                before()
            tic = time.perf_counter()
            out = fn()
            times.append((time.perf_counter() - tic) * 1e3)
            del out
        return statistics.median(times), None

    with torch.cuda.device(device):  # events, synchronization and memory stats on fn's device
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(iters):
            if before is not None:
                before()
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
            del out
        return statistics.median(times), torch.cuda.max_memory_allocated()


def median_ms(
    fn: Callable[[], object],
    warmup: int = 3,
    iters: int = 10,
    device: str | torch.device = "cpu",
    *,
    before: Callable[[], object] | None = None,
) -> float:
    """The median milliseconds from ``measure`` (same arguments)."""
    return measure(fn, warmup, iters, device, before=before)[0]


def l2_flush(
    device: str | torch.device = "cuda", nbytes: int = 256 * 2**20
) -> Callable[[], object]:
    """A ``before`` hook: zero an ``nbytes`` buffer on ``device``, larger than an H100/H200 L2.

    The timed call then finds its inputs in device memory rather than in L2, and the host
    can launch it while the GPU is still zeroing. The buffer counts in ``measure``'s peak.
    """
    buffer = torch.empty(nbytes, dtype=torch.int8, device=device)
    return buffer.zero_


def cpu_peak_bytes(fn: Callable[[], object]) -> int:
    """The most bytes that one call of ``fn`` holds allocated at once on the CPU (its temporaries
    and outputs; tensors that existed before the call are not counted).

    One call runs under ``torch.profiler`` with memory profiling: every op's own allocations
    and every free are events in time, and their running sum peaks at the answer.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
        del out
    changes = sorted((e.time_range.start, e.self_cpu_memory_usage if e.name != "[memory]"
                      else e.cpu_memory_usage) for e in prof.events())
    live = peak = 0
    for _, change in changes:
        live += change
        peak = max(peak, live)
    return peak
