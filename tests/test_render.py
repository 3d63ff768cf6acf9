"""Tests of the procedural renderer, seed splits, scene files and scene figures."""

from itertools import pairwise

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from qvggt_lib.data import (
    SPLITS,
    load_scene,
    plot_scene,
    render,
    render_batch,
    render_scene,
    render_split,
    save_scene,
    scene_seed,
)

matplotlib.use("Agg")

SEED = 7


@pytest.fixture(scope="module")
def scene():
    return render_scene(SEED)


def unproject(depth, extrinsics, intrinsics):
    """World points [S, H, W, 3] = R^T (d K^-1 (u, v, 1) - t), pixel (u, v) without +0.5."""
    _, height, width = depth.shape
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    rays = (
        np.stack([u, v, np.ones_like(u)], axis=-1)
        @ np.linalg.inv(intrinsics).transpose(0, 2, 1)[:, None]
    )  # [S, H, W, 3]
    camera_points = rays * depth[..., None].astype(np.float64)
    rotation, translation = extrinsics[:, :3, :3], extrinsics[:, :3, 3]
    return np.einsum("sji,shwj->shwi", rotation, camera_points - translation[:, None, None])


def high_frequency_fraction(images):
    """Share of the (mean-removed) grey-level power at radial frequencies > 0.35 cycles/px."""
    grey = images.mean(axis=1)
    grey = grey - grey.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(grey)) ** 2
    freq = np.fft.fftfreq(grey.shape[-1])
    return power[:, np.hypot(freq[:, None], freq[None, :]) > 0.35].sum() / power.sum()


def test_shapes_dtypes_ranges(scene):
    s, h, w = 8, 112, 112
    expected = {
        "images": ((s, 3, h, w), np.float32),
        "depth": ((s, h, w), np.float32),
        "extrinsics": ((s, 3, 4), np.float32),
        "intrinsics": ((s, 3, 3), np.float32),
        "world_points": ((s, h, w, 3), np.float32),
        "valid": ((s, h, w), np.bool_),
    }
    for key, (shape, dtype) in expected.items():
        assert scene[key].shape == shape and scene[key].dtype == dtype, key
    assert scene["images"].min() >= 0.0 and scene["images"].max() <= 1.0
    assert scene["images"].std() > 0.05
    assert int(scene["seed"]) == SEED and int(scene["num_frames"]) == s
    assert scene["valid"].all()  # closed room: every ray hits a surface
    assert (scene["depth"][scene["valid"]] > 0).all()
    assert np.isfinite(scene["world_points"]).all()


def test_cameras(scene):
    rotation, intrinsics = scene["extrinsics"][:, :, :3].astype(np.float64), scene["intrinsics"]
    np.testing.assert_allclose(
        rotation @ rotation.transpose(0, 2, 1),
        np.broadcast_to(np.eye(3), rotation.shape),
        atol=1e-5,
    )
    np.testing.assert_allclose(np.linalg.det(rotation), 1.0, atol=1e-5)
    assert (intrinsics[:, 0, 2] == 56.0).all() and (intrinsics[:, 1, 2] == 56.0).all()
    assert (intrinsics[:, 0, 0] == intrinsics[:, 1, 1]).all()
    fov = np.rad2deg(2.0 * np.arctan(56.0 / intrinsics[:, 1, 1]))
    assert ((fov >= 45.0) & (fov <= 75.0)).all()


def test_cameras_look_at_scene_centre_inside_room(scene):
    layout = render._sample_layout(np.random.default_rng(SEED))
    extrinsics = scene["extrinsics"].astype(np.float64)
    centre_cam = extrinsics[:, :, :3] @ layout.centre + extrinsics[:, :, 3]  # [S, 3]
    assert (centre_cam[:, 2] > 0).all()
    pixel = (scene["intrinsics"] @ centre_cam[:, :, None])[:, :, 0]
    pixel = pixel[:, :2] / pixel[:, 2:]
    assert np.abs(pixel - 56.0).max() < 20.0  # look-at jitter <= 0.26 units at distance >= 2
    positions = -np.einsum("sji,sj->si", extrinsics[:, :, :3], extrinsics[:, :, 3])
    assert ((positions > layout.room.lo) & (positions < layout.room.hi)).all()
    offsets = positions - layout.centre
    azimuths = np.arctan2(offsets[:, 1], offsets[:, 0])
    relative = np.rad2deg(np.angle(np.exp(1j * (azimuths - azimuths[0]))))  # wrapped to (-180, 180]
    assert 30.0 < np.ptp(relative) <= 120.0  # frames spread over the arc of +-60 degrees


def test_world_points_are_unprojected_depth(scene):
    points = unproject(scene["depth"], scene["extrinsics"], scene["intrinsics"])
    scale = np.abs(scene["world_points"]).max()
    np.testing.assert_allclose(scene["world_points"], points, rtol=1e-4, atol=1e-4 * scale)
    geometry = pytest.importorskip("qvggt_lib.geometry")
    reference = geometry.unproject_depth_map_to_point_map(
        scene["depth"][..., None], scene["extrinsics"], scene["intrinsics"]
    )
    np.testing.assert_allclose(
        scene["world_points"], np.asarray(reference), rtol=1e-4, atol=1e-4 * scale
    )


def test_deterministic_and_seed_dependent():
    first, second = (
        render_scene(3, num_frames=3, image_size=48),
        render_scene(3, num_frames=3, image_size=48),
    )
    for key in first:
        assert np.array_equal(first[key], second[key]), key
    other = render_scene(4, num_frames=3, image_size=48)
    for key in ("images", "depth", "extrinsics", "intrinsics"):
        assert not np.array_equal(first[key], other[key]), key


def test_textures_are_band_limited(monkeypatch):
    filtered = [
        high_frequency_fraction(render_scene(seed, num_frames=4)["images"]) for seed in range(4)
    ]
    monkeypatch.setattr(render, "FILTER_SIGMA_PX", 0.0)
    monkeypatch.setattr(render, "MIN_EDGE_PX", 0.01)
    monkeypatch.setattr(render, "SUBPIXEL_OFFSETS", ((0.0, 0.0),))
    aliased = [
        high_frequency_fraction(render_scene(seed, num_frames=4)["images"]) for seed in range(4)
    ]
    assert max(filtered) < 0.03
    assert np.mean(filtered) < 0.7 * np.mean(aliased)


def test_splits_are_disjoint_and_checked():
    ranges = sorted(SPLITS.values(), key=lambda seeds: seeds.start)
    assert all(a.stop <= b.start for a, b in pairwise(ranges))
    assert scene_seed("train", 0) == SPLITS["train"].start
    assert scene_seed("test", 5) == SPLITS["test"].start + 5
    with pytest.raises(KeyError, match="unknown split"):
        scene_seed("validation", 0)
    with pytest.raises(IndexError, match="out of range"):
        scene_seed("calib", len(SPLITS["calib"]))
    with pytest.raises(IndexError):
        scene_seed("calib", -1)
    scene = render_split("calib", 2, num_frames=2, image_size=32)
    assert int(scene["seed"]) == SPLITS["calib"].start + 2
    assert np.array_equal(
        scene["images"], render_scene(scene_seed("calib", 2), num_frames=2, image_size=32)["images"]
    )


def test_npz_round_trip_and_errors(tmp_path):
    scene = render_scene(11, num_frames=2, image_size=32)
    path = tmp_path / "scene.npz"
    save_scene(scene, path)
    loaded = load_scene(path)
    assert loaded.keys() == scene.keys()
    for key in scene:
        assert loaded[key].dtype == np.asarray(scene[key]).dtype
        assert np.array_equal(loaded[key], scene[key]), key
    with pytest.raises(FileNotFoundError):
        load_scene(tmp_path / "missing.npz")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated"):
        load_scene(truncated)


def test_render_batch():
    batch = render_batch([1, 2], num_frames=3, image_size=32)
    expected = {
        "images": (2, 3, 3, 32, 32),
        "depth": (2, 3, 32, 32),
        "extrinsics": (2, 3, 3, 4),
        "intrinsics": (2, 3, 3, 3),
        "world_points": (2, 3, 32, 32, 3),
        "valid": (2, 3, 32, 32),
    }
    for key, shape in expected.items():
        assert tuple(batch[key].shape) == shape, key
    assert batch["images"].dtype == torch.float32 and batch["valid"].dtype == torch.bool
    assert torch.equal(batch["depth"][1], torch.from_numpy(render_scene(2, 3, 32)["depth"]))


def test_plot_scene(scene):
    fig = plot_scene(scene)
    assert len(fig.axes) >= 9
    plt.close(fig)
    pred = {"depth": scene["depth"] * 1.1, "extrinsics": torch.from_numpy(scene["extrinsics"])}
    fig = plot_scene(scene, pred=pred, max_frames=2)
    titles = [ax.get_title() for ax in fig.axes]
    assert "frame 1" in titles and any("cameras" in title for title in titles)
    assert any(ax.get_ylabel() == "predicted depth" for ax in fig.axes)
    plt.close(fig)
