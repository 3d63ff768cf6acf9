"""timing.measure / median_ms: warm-up and timed calls, the median, peak memory."""

import pytest
import torch
from qvggt_kernels import timing


class FakeClock:
    """Stands in for time.perf_counter; each call of ``work`` advances it by the next duration."""

    def __init__(self, durations_ms):
        self.now, self.durations = 0.0, list(durations_ms)
        self.calls = 0

    def __call__(self):
        return self.now

    def work(self):
        self.calls += 1
        self.now += self.durations.pop(0) / 1e3 if self.durations else 0.0
        return torch.zeros(1)


def test_cpu_median_of_the_timed_calls_after_warmup(monkeypatch):
    # two warm-up calls (100 ms each, not counted), then 5, 1, 3 ms: median 3 ms
    clock = FakeClock([100, 100, 5, 1, 3])
    monkeypatch.setattr(timing.time, "perf_counter", clock)
    before = []
    ms, peak = timing.measure(clock.work, 2, 3, "cpu", before=lambda: before.append(clock.calls))
    assert ms == pytest.approx(3.0) and peak is None
    assert clock.calls == 5 and before == [2, 3, 4]  # before runs ahead of each timed call only


def test_median_ms_is_measure_without_the_peak(monkeypatch):
    clock = FakeClock([2, 8, 4, 6])
    monkeypatch.setattr(timing.time, "perf_counter", clock)
    assert timing.median_ms(clock.work, warmup=0, iters=4, device=torch.device("cpu")) == (
        pytest.approx(5.0)
    )


def test_argument_errors():
    with pytest.raises(ValueError, match="iters"):
        timing.measure(lambda: None, 0, 0)
    with pytest.raises(ValueError, match="warmup"):
        timing.measure(lambda: None, -1, 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_events_and_peak_memory():
    x = torch.randn(1024, 1024, device="cuda")
    flush = timing.l2_flush("cuda", nbytes=2**20)
    ms, peak = timing.measure(lambda: x @ x, 2, 5, "cuda", before=flush)
    assert ms > 0
    # x, the flush buffer and one 4 MiB product at a time were allocated during the timed calls
    assert peak >= x.numel() * 4 * 2 + 2**20
