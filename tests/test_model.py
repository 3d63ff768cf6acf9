"""The VGGT re-implementation: official key manifest, shapes, token routing, RoPE, checkpoints, bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qvggt_lib.model import (
    CheckpointError,
    build_vggt,
    get_config,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from qvggt_lib.model.aggregator import first_frame_split
from qvggt_lib.model.layers import RotaryPositionEmbedding2D

MANIFEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "vggt1b_state_dict.tsv"


def official_manifest() -> dict[str, tuple[int, ...]]:
    rows = {}
    for line in MANIFEST.read_text().splitlines():
        key, shape = line.split("\t")[:2]
        rows[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return rows


@pytest.fixture(scope="module")
def tiny():
    return build_vggt("tiny", seed=0).eval()


@pytest.mark.skipif(not MANIFEST.is_file(), reason="needs ../shared/data/vggt1b_state_dict.tsv")
def test_vggt1b_state_dict_matches_official_manifest_exactly():
    model = build_vggt("vggt-1b", device="meta")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    official = {k: v for k, v in official_manifest().items() if not k.startswith("track_head.")}
    assert len(official) == 1403
    assert sorted(set(official) - set(ours)) == []
    assert sorted(set(ours) - set(official)) == []
    assert {k: v for k, v in official.items() if ours[k] != v} == {}
    assert sum(v.numel() for v in model.state_dict().values()) == 1_190_596_120


@pytest.mark.parametrize("frames", [1, 3])
def test_tiny_forward_shapes(tiny, frames):
    H = W = tiny.config.img_size
    with torch.no_grad():
        out = tiny(torch.rand(frames, 3, H, W))
    assert out["pose_enc"].shape == (1, frames, 9)
    assert len(out["pose_enc_list"]) == 4
    assert out["depth"].shape == (1, frames, H, W, 1)
    assert out["depth_conf"].shape == (1, frames, H, W)
    assert out["world_points"].shape == (1, frames, H, W, 3)
    assert out["world_points_conf"].shape == (1, frames, H, W)
    assert (out["depth"] > 0).all() and (out["depth_conf"] >= 1).all()


def test_batched_input_and_non_square_images(tiny):
    with torch.no_grad():
        out = tiny(torch.rand(2, 2, 3, 84, 140))
    assert out["depth"].shape == (2, 2, 84, 140, 1)


def test_vggt1b_widths_forward_shapes():
    """Official widths (1024/2048, 16 heads, DPT 256), shallow depth so it runs on CPU in seconds."""
    model = build_vggt(
        "vggt-1b", depth=2, patch_embed_depth=1, camera_trunk_depth=1, intermediate_layer_idx=(0, 0, 1, 1)
    ).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 28, 42))
    assert out["pose_enc"].shape == (1, 2, 9)
    assert out["world_points"].shape == (1, 2, 28, 42, 3)


def test_frame_batching_is_independent_of_other_scenes(tiny):
    """Scenes in a batch do not interact: scene 0 alone gives the same output."""
    images = torch.rand(2, 3, 3, 56, 56)
    with torch.no_grad():
        both = tiny(images)
        single = tiny(images[:1])
    torch.testing.assert_close(both["depth"][:1], single["depth"], rtol=1e-4, atol=1e-5)


def test_first_frame_gets_its_own_special_tokens(tiny):
    agg = tiny.aggregator
    tokens, pos = agg.embed(torch.rand(2, 3, 3, 56, 56))  # B=2, S=3
    tokens = tokens.reshape(2, 3, -1, tokens.shape[-1])
    for b in range(2):
        torch.testing.assert_close(tokens[b, 0, 0], agg.camera_token[0, 0, 0])
        torch.testing.assert_close(tokens[b, 0, 1:5], agg.register_token[0, 0])
        for s in (1, 2):
            torch.testing.assert_close(tokens[b, s, 0], agg.camera_token[0, 1, 0])
            torch.testing.assert_close(tokens[b, s, 1:5], agg.register_token[0, 1])
    split = first_frame_split(torch.arange(2 * 4.0).reshape(1, 2, 1, 4), B=1, S=3)
    assert split[:, 0, 0].tolist() == [0.0, 4.0, 4.0]


def test_rope_positions_special_tokens_at_origin_patches_offset_by_one(tiny):
    _, pos = tiny.aggregator.embed(torch.rand(1, 1, 3, 28, 42))  # 2 x 3 patch grid
    assert pos.shape == (1, 5 + 6, 2)
    assert pos[0, :5].tolist() == [[0, 0]] * 5
    assert pos[0, 5:].tolist() == [[1, 1], [1, 2], [1, 3], [2, 1], [2, 2], [2, 3]]


def test_rope_is_relative_and_y_then_x():
    rope = RotaryPositionEmbedding2D(100.0)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16, generator=g), torch.randn(1, 1, 1, 16, generator=g)

    def score(pq, pk):
        rq = rope(q, torch.tensor([[pq]]))
        rk = rope(k, torch.tensor([[pk]]))
        return float((rq * rk).sum())

    # angles pos * inv_freq round differently for the two pairs (~2e-7 rad): ~1e-6 apart at most
    assert score((2, 3), (5, 1)) == pytest.approx(score((4, 6), (7, 4)), abs=1e-4)
    # position (0, 0) is the identity
    torch.testing.assert_close(rope(q, torch.zeros(1, 1, 2, dtype=torch.long)), q)
    # the y position only rotates the first half of the channels
    moved = rope(q, torch.tensor([[[3, 0]]]))
    torch.testing.assert_close(moved[..., 8:], q[..., 8:])
    assert not torch.allclose(moved[..., :8], q[..., :8])


def test_save_load_round_trip_is_bit_exact(tiny, tmp_path):
    path = save_checkpoint(tiny, tmp_path / "tiny.safetensors")
    loaded = load_model(path)
    assert loaded.config == tiny.config
    for (k, a), (_, b) in zip(tiny.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    x = torch.rand(2, 3, 56, 56)
    with torch.no_grad():
        assert torch.equal(tiny(x)["depth"], loaded(x)["depth"])


def test_official_style_pt_with_track_head_loads_and_reports_skipped(tiny, tmp_path):
    state = dict(tiny.state_dict())
    state["track_head.tracker.query_ref_token"] = torch.zeros(1, 2, 388)
    torch.save(state, tmp_path / "model.pt")
    model = build_vggt("tiny", seed=1)
    report = load_checkpoint(model, tmp_path / "model.pt")
    assert report.skipped == ["track_head.tracker.query_ref_token"]
    assert len(report.loaded) == len(tiny.state_dict())
    assert torch.equal(model.aggregator.camera_token, tiny.aggregator.camera_token)


def test_checkpoint_for_another_size_is_rejected_with_the_keys(tiny, tmp_path):
    path = save_checkpoint(tiny, tmp_path / "tiny.safetensors")
    other = build_vggt("tiny", depth=4, intermediate_layer_idx=(0, 1, 2, 3), embed_dim=64)
    with pytest.raises(CheckpointError, match=r"(?s)unexpected.*shape mismatch"):
        load_checkpoint(other, path)


def test_truncated_checkpoint_is_a_clear_error(tiny, tmp_path):
    path = save_checkpoint(tiny, tmp_path / "tiny.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(path)
    pt = tmp_path / "model.pt"
    torch.save(tiny.state_dict(), pt)
    pt.write_bytes(pt.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(build_vggt("tiny"), pt)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.safetensors")


@pytest.mark.parametrize(
    "images, message",
    [
        (torch.rand(2, 3, 50, 56), "multiples of the patch size"),
        (torch.rand(2, 4, 56, 56), "3 \\(RGB\\) channels"),
        (torch.rand(2, 3, 56, 56) * 255, "in \\[0, 1\\]"),
        ((torch.rand(2, 3, 56, 56) - 0.45) / 0.22, "in \\[0, 1\\]"),
        (torch.rand(3, 56, 56), "shape \\[S, 3, H, W\\]"),
        ((torch.rand(2, 3, 56, 56) * 255).to(torch.uint8), "floating point"),
    ],
)
def test_bad_images_get_clear_errors(tiny, images, message):
    with pytest.raises((ValueError, TypeError), match=message):
        tiny(images)


def test_bad_config_names_and_overrides():
    with pytest.raises(ValueError, match="Unknown model config"):
        build_vggt("vggt-7b")
    with pytest.raises(ValueError, match="Unknown config override"):
        build_vggt("tiny", width=3)
    with pytest.raises(ValueError, match="not divisible"):
        get_config("tiny", num_heads=3)


def test_build_is_seeded():
    a, b = build_vggt("tiny", seed=3), build_vggt("tiny", seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def test_readme_demo_command_runs():
    result = subprocess.run(
        [sys.executable, "-m", "qvggt_lib.cli", "demo", "--model", "tiny", "--frames", "2", "--repeats", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "depth" in result.stdout and "forward: median" in result.stdout
