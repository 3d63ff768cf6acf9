"""The one hook mechanism (qvggt_lib.quant.observers): running maxima, recorded inputs, clean removal."""

import pytest
import torch
from torch import nn

from qvggt_lib.quant.hadamard import RandomHadamard
from qvggt_lib.quant.observers import AbsMaxObserver, StopForward, hooks, record_inputs


def test_observer_tracks_running_channel_max_in_plain_and_rotated_space():
    a, b = torch.randn(2, 10, 16), torch.randn(30, 16)
    rotation = RandomHadamard(16, seed=0)
    plain, rotated = AbsMaxObserver(), AbsMaxObserver(rotation)
    for chunk in (a, b):
        plain.update(chunk)
        rotated.update(chunk)
    everything = torch.cat([a.reshape(-1, 16), b])
    assert torch.equal(plain.absmax, everything.abs().amax(0))
    assert torch.allclose(rotated.absmax, rotation.rotate(everything).abs().amax(0))


def test_hooks_see_inputs_or_outputs_and_are_removed_even_after_an_error():
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    seen = []
    with hooks(net, {"0": lambda args: seen.append(("in", args[0].shape))}), \
            hooks(net, {"1": lambda out: seen.append(("out", out.shape))}, on="output"):
        net(torch.randn(2, 4))
    assert seen == [("in", (2, 4)), ("out", (2, 3))]
    assert not net[0]._forward_pre_hooks and not net[1]._forward_hooks

    def stop(args):
        raise StopForward

    with pytest.raises(StopForward), hooks(net, {"1": stop}):
        net(torch.randn(2, 4))
    assert not net[1]._forward_pre_hooks
    with pytest.raises(ValueError, match="on must be"), hooks(net, {}, on="backward"):
        pass


def test_record_inputs_concatenates_calls_and_removes_hooks():
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    a, b = torch.randn(2, 3, 8), torch.randn(5, 8)
    with record_inputs(net, ["0", "2"]) as rec:
        net(a)
        net(b)
    assert set(rec) == {"0", "2"}
    assert rec["0"].shape == (11, 8) and rec["2"].shape == (11, 16)
    torch.testing.assert_close(rec["0"], torch.cat((a.reshape(-1, 8), b)))
    torch.testing.assert_close(rec["2"][:6], torch.relu(net[0](a)).reshape(-1, 16))
    assert not net[0]._forward_pre_hooks and not net[2]._forward_pre_hooks


def test_record_inputs_leaves_out_modules_not_called():
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    with record_inputs(net, ["1"]) as rec:
        net[0](torch.randn(2, 4))
    assert rec == {}
