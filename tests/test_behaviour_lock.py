"""The library's results stay put while its code moves: quantized and deployed outputs of the
shipped tiny model against outputs recorded in tests/data/behaviour_lock.safetensors.

Recorded before the library layout changed (rtn, smoothquant, gptq, quarot and quantvggt,
simulated, reloaded from file and deployed, plus an NFDS pick). On the machine and torch that
recorded them the outputs are bit-identical; elsewhere a BLAS code path moves the float outputs
by ~1e-7 relative, and the quantizers then flip an occasional rounding tie (docs/portability.md:
whole-model W4A4 errors move by 0.1 % to 1.5 %). So each output is compared with its recording
relative to the quantization error itself, ||Q - Q_rec|| <= 0.2 ||Q_rec - FP||: a changed
rotation seed, smoothing or clip start moves it by about sqrt(2) ||Q_rec - FP||, a tie flip by
well under 0.05 (measured with the instruction set forced to AVX2: at most 0.03).

    python tests/test_behaviour_lock.py           # re-record (only after a deliberate change)
    python tests/test_behaviour_lock.py --digest  # SHA-256 of the full outputs, for exact checks
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from qvggt_lib.data import render_split
from qvggt_lib.deploy import deploy
from qvggt_lib.model import load_pretrained
from qvggt_lib.quant import load_quantized, quantize, save_quantized
from qvggt_lib.quant.sampling import select_calibration

RECORDING = Path(__file__).parent / "data" / "behaviour_lock.safetensors"
OUTPUTS = ("depth", "world_points", "pose_enc")
CASES = {  # name: (method, bits, options)
    "rtn_w4a4": ("rtn", "w4a4", {}),
    "smoothquant_w8a8": ("smoothquant", "w8a8", {}),
    "gptq_w4a8": ("gptq", "w4a8", {}),
    "quarot_w4a4": ("quarot", "w4a4", {}),
    "quantvggt_w4a4": ("quantvggt", "w4a4", {"epochs": 1}),
    "quantvggt_smooth_then_rotate_w8a8": ("quantvggt", "w8a8",
                                          {"epochs": 1, "order": "smooth_then_rotate"}),
}
DEPLOYED = ("rtn_w4a4", "quarot_w4a4", "quantvggt_w4a4")
RELATIVE_TO_QUANT_ERROR = 0.2  # see the module docstring


def _images(split: str, index: int) -> torch.Tensor:
    return torch.from_numpy(render_split(split, index, num_frames=4, image_size=112)["images"])


@torch.no_grad()
def _outputs(model, scenes, pooled: bool) -> dict[str, torch.Tensor]:
    """Flattened outputs; pooled: depth and points averaged over 8 x 8 pixels (a small file)."""
    preds = [model(scene) for scene in scenes]
    if pooled:
        for p in preds:
            p["depth"] = F.avg_pool2d(p["depth"][0].movedim(-1, 1), 8)
            p["world_points"] = F.avg_pool2d(p["world_points"][0].movedim(-1, 1), 8)
    return {key: torch.cat([p[key].float().flatten() for p in preds]) for key in OUTPUTS}


def compute(pooled: bool = True) -> dict[str, torch.Tensor]:
    """{case/output: flattened tensor}, the float model's outputs under "fp/..."."""
    torch.manual_seed(0)
    model = load_pretrained("tiny").eval()
    calibration = [_images("calib", i) for i in range(3)]
    scenes = [_images("test", i) for i in range(2)]
    result = {f"fp/{k}": v for k, v in _outputs(model, scenes, pooled).items()}
    pick = select_calibration(model, [_images("calib", i) for i in range(12)], num_samples=4,
                              num_clusters=2)
    result["nfds/pick"] = torch.tensor(pick)
    for name, (method, bits, options) in CASES.items():
        q_model = quantize(model, method, bits=bits, calibration=calibration, progress=False,
                           **options)
        result.update({f"{name}/{k}": v for k, v in _outputs(q_model, scenes, pooled).items()})
        with tempfile.TemporaryDirectory() as tmp:
            path = save_quantized(q_model, Path(tmp) / "q.safetensors")
            reloaded = _outputs(load_quantized(path), scenes, pooled)
        result.update({f"{name}/reloaded/{k}": v for k, v in reloaded.items()})
        if name in DEPLOYED:
            deployed = _outputs(deploy(q_model, backend="torch"), scenes, pooled)
            result.update({f"{name}/deployed/{k}": v for k, v in deployed.items()})
    return result


def digest(outputs: dict[str, torch.Tensor]) -> str:
    """SHA-256 of every tensor's bytes, in key order: equal digests = bit-identical results."""
    sha = hashlib.sha256()
    for key in sorted(outputs):
        sha.update(key.encode())
        sha.update(outputs[key].contiguous().numpy().tobytes())
    return sha.hexdigest()


@pytest.fixture(scope="module")
def computed():
    return compute()


@pytest.fixture(scope="module")
def recorded():
    return load_file(str(RECORDING))


def test_the_same_cases_are_recorded(computed, recorded):
    assert sorted(computed) == sorted(recorded)


def test_nfds_pick_unchanged(computed, recorded):
    assert computed["nfds/pick"].tolist() == recorded["nfds/pick"].tolist()


@pytest.mark.parametrize("key", [
    f"{case}/{suffix}{out}" for case in CASES for out in OUTPUTS
    for suffix in ("", "reloaded/", *(("deployed/",) if case in DEPLOYED else ()))])
def test_outputs_match_recording(computed, recorded, key):
    output = key.rsplit("/", 1)[1]
    quant_error = (recorded[key] - recorded[f"fp/{output}"]).norm()
    moved = (computed[key] - recorded[key]).norm()
    assert moved <= RELATIVE_TO_QUANT_ERROR * quant_error, (
        f"{key} moved by {float(moved / quant_error):.3f} of its quantization error")


def test_float_outputs_match_recording(computed, recorded):
    for output in OUTPUTS:  # BLAS order alone: ~1e-7 relative (docs/portability.md)
        torch.testing.assert_close(computed[f"fp/{output}"], recorded[f"fp/{output}"],
                                   rtol=1e-4, atol=1e-5)


if __name__ == "__main__":
    if "--digest" in sys.argv:  # the full outputs' digest: compare before and after a change
        print(digest(compute(pooled=False)))
    else:
        RECORDING.parent.mkdir(exist_ok=True)
        save_file(compute(), str(RECORDING))
        print(f"recorded {RECORDING}")
