"""7-Scenes / NRGBD readers (qvggt_lib.data.rgbd_scenes) and the Table 3 point-cloud protocol
(qvggt_lib.eval.pointcloud) on raw-format fixtures rendered with known cameras (tests/rgbd_fixture.py)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from rgbd_fixture import render_rgbd, write_nrgbd_fixture, write_seven_scenes_fixture
from scipy.spatial.transform import Rotation

from qvggt_lib.data.rgbd_scenes import NRGBD, SevenScenes, open_dataset, pinhole_intrinsics
from qvggt_lib.eval import pointcloud as pc
from qvggt_lib.geometry import unproject_depth_map_to_point_map
from qvggt_lib.model import load_pretrained

MILLIMETRE = 1e-3
TEST_SEQUENCES = ["chess/seq-02", "heads/seq-02"]


@pytest.fixture(scope="module")
def seven_scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("7scenes")
    truth = write_seven_scenes_fixture(
        root, scenes=("chess", "heads"), sequences=(1, 2), test_sequences=(2,), frames=3
    )
    return root, truth


@pytest.fixture(scope="module")
def nrgbd(tmp_path_factory):
    root = tmp_path_factory.mktemp("nrgbd")
    return root, write_nrgbd_fixture(root, frames=5)


@pytest.fixture(scope="module")
def loaded(seven_scenes):
    """chess/seq-02 at the tiny model's input size, ground truth in the first camera's frame."""
    root, _ = seven_scenes
    sequence = SevenScenes(root).load_sequence("chess/seq-02", image_size=112, kf_every=1)
    return sequence, pc.to_first_camera(sequence["world_points"], sequence["extrinsics"])


@pytest.fixture(scope="module")
def tiny():
    return load_pretrained("tiny")


@pytest.fixture
def broken_tree(seven_scenes, tmp_path):
    """A writable copy of the 7-Scenes fixture and its chess/seq-02 folder, to damage."""
    root = tmp_path / "7scenes"
    shutil.copytree(seven_scenes[0], root)
    return root, root / "chess" / "seq-02"


# ----------------------------------------------------------------------------------------------
# Readers
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, sequence, frames", [("7scenes", "chess/seq-02", 3), ("nrgbd", "kitchen", 5)]
)
def test_reader_round_trip(seven_scenes, nrgbd, name, sequence, frames):
    """Cameras to 1e-6 (OpenGL poses turned to OpenCV for NRGBD), depth to the millimetre rounding."""
    root, truth = {"7scenes": seven_scenes, "nrgbd": nrgbd}[name]
    data, expected = open_dataset(name, root), truth[sequence]
    raw = data.read_sequence(sequence, kf_every=1)
    assert raw["frames"] == list(range(frames))
    np.testing.assert_allclose(raw["extrinsics"], expected["extrinsics"], atol=1e-6)
    np.testing.assert_allclose(raw["intrinsics"], expected["intrinsics"], atol=1e-12)
    np.testing.assert_array_equal(raw["valid"], expected["valid"])
    assert (
        np.abs(raw["depth"] - expected["depth"])[expected["valid"]].max() <= MILLIMETRE / 2 + 1e-9
    )
    assert (raw["depth"][~expected["valid"]] == 0).all()
    assert raw["extrinsics"].dtype == np.float64 and raw["extrinsics"].shape == (frames, 3, 4)


def test_dataset_intrinsics_are_upstreams():
    np.testing.assert_array_equal(
        pinhole_intrinsics(SevenScenes.focal), [[525, 0, 320], [0, 525, 240], [0, 0, 1]]
    )
    assert NRGBD.focal == pytest.approx(320 / np.tan(np.radians(30)), abs=1e-9)


def test_sequences_follow_the_split_files(seven_scenes, nrgbd):
    data = SevenScenes(seven_scenes[0])
    assert data.list_sequences() == TEST_SEQUENCES
    assert data.list_sequences(split="train") == ["chess/seq-01", "heads/seq-01"]
    assert data.list_sequences(scenes="heads") == ["heads/seq-02"]
    assert NRGBD(nrgbd[0]).list_sequences() == ["kitchen"]


def test_keyframes_every_n(seven_scenes, nrgbd):
    seven, rgbd = SevenScenes(seven_scenes[0]), NRGBD(nrgbd[0])
    assert seven.keyframes("chess/seq-02", kf_every=2) == [0, 2]
    assert seven.keyframes("chess/seq-02") == [0]  # default stride 100
    assert rgbd.keyframes("kitchen", kf_every=1) == [0, 1, 2, 3, 4]
    # NRGBD strides by min(kf_every, N // 2): 5 frames give a stride of 2 for any kf_every >= 2
    assert rgbd.keyframes("kitchen") == rgbd.keyframes("kitchen", kf_every=3) == [0, 2, 4]
    assert rgbd.read_sequence("kitchen")["frames"] == [0, 2, 4]


@pytest.mark.parametrize("mode, shape", [("crop", (84, 112)), ("pad", (112, 112))])
def test_ground_truth_lands_on_the_model_input_pixels(seven_scenes, mode, shape):
    """The resampled depth with the adjusted K matches the same cameras rendered directly at that K."""
    root, truth = seven_scenes
    sequence = SevenScenes(root).load_sequence(
        "chess/seq-02", image_size=112, mode=mode, kf_every=1
    )
    assert tuple(sequence["images"].shape) == (3, 3, *shape)
    assert sequence["depth"].shape == sequence["valid"].shape == (3, *shape)
    direct = render_rgbd(
        truth["chess/seq-02"]["seed"], 3, shape[1], shape[0], sequence["intrinsics"][0]
    )
    np.testing.assert_allclose(direct["extrinsics"], sequence["extrinsics"], atol=1e-6)
    error = np.abs(direct["depth"] - sequence["depth"])[sequence["valid"]]
    assert np.median(error) < 1.5 * MILLIMETRE and np.mean(error < 0.02) > 0.99
    np.testing.assert_allclose(
        sequence["world_points"],
        unproject_depth_map_to_point_map(
            sequence["depth"], sequence["extrinsics"], sequence["intrinsics"]
        ),
    )
    if mode == "pad":  # 84 content rows centred in 112: 14 rows of padding above and below
        assert not sequence["valid"][:, :14].any() and not sequence["valid"][:, -14:].any()


# ----------------------------------------------------------------------------------------------
# Protocol steps
# ----------------------------------------------------------------------------------------------


def test_identical_prediction_scores_zero(loaded):
    sequence, gt = loaded
    metrics = pc.pointcloud_metrics(gt, gt, sequence["valid"])
    for key in ("acc", "acc_med", "comp", "comp_med"):
        assert metrics[key] == pytest.approx(0, abs=1e-12)
    assert metrics["nc"] == pytest.approx(1) and metrics["nc_med"] == pytest.approx(1)
    assert (
        metrics["num_points"] == sequence["valid"][:, 18:66, 32:80].sum()
    )  # the central 48 x 48 window


def test_true_geometry_scores_within_the_depth_quantization(seven_scenes, loaded):
    """The unrounded scene against ground truth read from millimetre PNGs and resampled nearest-neighbour."""
    sequence, gt = loaded
    direct = render_rgbd(
        seven_scenes[1]["chess/seq-02"]["seed"], 3, 112, 84, sequence["intrinsics"][0]
    )
    metrics = pc.pointcloud_metrics(
        pc.to_first_camera(direct["world_points"], direct["extrinsics"]), gt, sequence["valid"]
    )
    assert metrics["acc"] < 3 * MILLIMETRE and metrics["comp"] < 3 * MILLIMETRE
    assert metrics["acc_med"] < 1.5 * MILLIMETRE and metrics["comp_med"] < 1.5 * MILLIMETRE
    assert metrics["nc"] > 0.99


def test_scale_and_depth_shift_are_removed_exactly(loaded):
    """Median z-shift and median-spread scaling undo any s x + (0, 0, dz) of the prediction."""
    sequence, gt = loaded
    metrics = pc.pointcloud_metrics(2.5 * gt + np.array([0.0, 0.0, 0.7]), gt, sequence["valid"])
    assert metrics["acc"] == pytest.approx(0, abs=1e-9) and metrics["comp"] == pytest.approx(
        0, abs=1e-9
    )


def test_similarity_is_undone_by_normalization_and_icp(loaded, monkeypatch):
    """3x scale, a 0.4 deg rotation and a 2.4 cm shift: the medians undo the scale and the z shift,
    ICP the rest. Point-to-point ICP only refines (larger rotations stall in local minima on these
    sparse clouds, as open3d's would): the first-camera frame already does the coarse alignment."""
    sequence, gt = loaded
    rotation = Rotation.from_euler("xyz", [0.2, 0.3, -0.2], degrees=True).as_matrix()
    moved = 3.0 * gt @ rotation.T + np.array([0.01, -0.01, 0.02])
    metrics = pc.pointcloud_metrics(moved, gt, sequence["valid"])
    assert metrics["acc"] < MILLIMETRE and metrics["comp"] < MILLIMETRE and metrics["nc"] > 0.9999
    monkeypatch.setattr(pc, "icp_point_to_point", lambda source, target: np.eye(4))
    assert pc.pointcloud_metrics(moved, gt, sequence["valid"])["acc"] > 5 * MILLIMETRE


def test_icp_recovers_a_rigid_transform(loaded):
    sequence, gt = loaded
    target = gt[sequence["valid"]]
    rotation = Rotation.from_euler("zyx", [2.0, -1.0, 1.5], degrees=True).as_matrix()
    source = target @ rotation.T + np.array([0.03, 0.01, -0.02])
    transform = pc.icp_point_to_point(source, target)
    np.testing.assert_allclose(source @ transform[:3, :3].T + transform[:3, 3], target, atol=1e-6)
    assert pc.icp_point_to_point(source + 10.0, target) == pytest.approx(
        np.eye(4)
    )  # nothing within 0.1 m


def test_offset_plane_gives_the_offset():
    """Two parallel 5 cm grids 1 cm apart: every nearest neighbour is straight across."""
    u, v = np.meshgrid(np.arange(20) * 0.05, np.arange(20) * 0.05)
    plane = np.stack([u.ravel(), v.ravel(), np.zeros(u.size)], axis=1)
    metrics = pc.cloud_metrics(plane + [0.0, 0.0, 0.01], plane)
    for key in ("acc", "acc_med", "comp", "comp_med"):
        assert metrics[key] == pytest.approx(0.01)
    assert metrics["nc"] == pytest.approx(1) and metrics["nc_med"] == pytest.approx(1)


def test_normals_of_a_plane_and_a_sphere():
    rng = np.random.default_rng(0)
    plane = np.concatenate([rng.uniform(-1, 1, (500, 2)), np.zeros((500, 1))], axis=1)
    np.testing.assert_allclose(
        np.abs(pc.estimate_normals(plane)), np.tile([0, 0, 1.0], (500, 1)), atol=1e-9
    )
    sphere = rng.normal(size=(4000, 3))
    sphere /= np.linalg.norm(sphere, axis=1, keepdims=True)
    assert np.abs(np.sum(pc.estimate_normals(sphere) * sphere, axis=1)).min() > 0.99
    assert pc.estimate_normals(np.ones((40, 3))) == pytest.approx(np.tile([0, 0, 1.0], (40, 1)))


def test_normalization_uses_lower_medians():
    """z -= lower median (2 of 1, 2, 3, 4), prediction scaled by the ratio of median spreads."""
    gt = np.zeros((1, 1, 4, 3))
    gt[..., 2] = [1.0, 2.0, 3.0, 4.0]
    pred, gt_shifted = pc.normalize_scale_shift(10 * gt, gt, np.ones((1, 1, 4), bool))
    np.testing.assert_allclose(gt_shifted[..., 2], [[[-1.0, 0.0, 1.0, 2.0]]])
    np.testing.assert_allclose(pred, gt_shifted)


def test_central_window_is_upstreams_at_518():
    assert pc.central_window(392, 518) == (slice(84, 308), slice(147, 371))
    assert pc.central_window(84, 112) == (slice(18, 66), slice(32, 80))


# ----------------------------------------------------------------------------------------------
# End to end with the shipped tiny model
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, kf_every, sequences", [("7scenes", 1, TEST_SEQUENCES), ("nrgbd", None, ["kitchen"])]
)
def test_evaluate_pointclouds_end_to_end(seven_scenes, nrgbd, tiny, name, kf_every, sequences):
    root = {"7scenes": seven_scenes, "nrgbd": nrgbd}[name][0]
    settings = {"kf_every": kf_every, "image_size": 112, "progress": False}
    results = pc.evaluate_pointclouds(tiny, name, root, keep_predictions=True, **settings)
    assert [seq["sequence"] for seq in results["per_sequence"]] == sequences
    assert results["num_sequences"] == len(sequences) and results["image_size"] == 112
    for key in pc.METRIC_KEYS:
        assert np.isfinite(results[key])
        assert results[key] == pytest.approx(np.mean([seq[key] for seq in results["per_sequence"]]))
    assert 0 <= results["acc_med"] and 0 <= results["nc"] <= 1
    again = pc.evaluate_pointclouds(
        tiny, name, root, reference=results.pop("predictions"), **settings
    )
    fidelity = again.pop("fidelity")
    assert (
        fidelity["depth_rel_diff"]
        == fidelity["points_rel_diff"]
        == fidelity["rotation_diff_deg"]
        == 0
    )
    assert fidelity["auc3"] == 100
    assert json.dumps(again, sort_keys=True) == json.dumps(results, sort_keys=True)  # deterministic


def test_evaluate_pointclouds_settings(seven_scenes, tiny):
    results = pc.evaluate_pointclouds(
        tiny,
        "7scenes",
        seven_scenes[0],
        kf_every=2,
        image_size=112,
        max_sequences=1,
        progress=False,
    )
    assert [seq["sequence"] for seq in results["per_sequence"]] == ["chess/seq-02"]
    assert results["per_sequence"][0]["frames"] == [0, 2] and results["kf_every"] == 2


# ----------------------------------------------------------------------------------------------
# Bad inputs
# ----------------------------------------------------------------------------------------------


def test_missing_folders_and_files_are_named(broken_tree, tmp_path):
    root, sequence_dir = broken_tree
    with pytest.raises(FileNotFoundError, match="root folder"):
        SevenScenes(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown dataset"):
        open_dataset("scannet", root)
    with pytest.raises(ValueError, match=r"no scene \['office'\].*chess"):
        SevenScenes(root).list_sequences(scenes=["office"])
    with pytest.raises(ValueError, match="split must be"):
        SevenScenes(root).list_sequences(split="val")
    (sequence_dir / "frame-000001.depth.png").unlink()
    with pytest.raises(FileNotFoundError, match="frame-000001.depth.png"):
        SevenScenes(root).read_sequence("chess/seq-02", kf_every=1)
    (root / "heads" / "TestSplit.txt").write_text("sequence5\n")
    with pytest.raises(FileNotFoundError, match="seq-05"):
        SevenScenes(root).read_sequence(SevenScenes(root).list_sequences(scenes="heads")[0])
    (root / "chess" / "TestSplit.txt").unlink()
    with pytest.raises(FileNotFoundError, match="TestSplit.txt"):
        SevenScenes(root).list_sequences()


def test_bad_depth_and_pose_files(broken_tree):
    root, sequence_dir = broken_tree
    data = SevenScenes(root)
    pose_path = sequence_dir / "frame-000000.pose.txt"
    pose_text = pose_path.read_text()
    depth_path = sequence_dir / "frame-000000.depth.png"
    Image.open(depth_path).convert("L").save(depth_path)
    with pytest.raises(ValueError, match="16-bit"):
        data.read_sequence("chess/seq-02")
    pose_path.write_text("1 0 0\n0 1 0\n0 0 1\n")
    with pytest.raises(ValueError, match="3x3 table; expected the 4x4"):
        data.read_sequence("chess/seq-02")
    pose_path.write_text("one two\n")
    with pytest.raises(ValueError, match="not a table of numbers"):
        data.read_sequence("chess/seq-02")
    pose_path.write_text(pose_text)
    color_path = sequence_dir / "frame-000000.color.png"
    Image.open(color_path).resize((320, 240)).save(color_path)
    with pytest.raises(ValueError, match="320x240 pixels; 7-Scenes frames are 640x480"):
        data.read_sequence("chess/seq-02")
    with pytest.raises(ValueError, match="kf_every must be a positive integer"):
        data.keyframes("chess/seq-02", kf_every=0)


def test_bad_nrgbd_poses(nrgbd, tmp_path):
    root = tmp_path / "nrgbd"
    shutil.copytree(nrgbd[0], root)
    poses_path = root / "kitchen" / "poses.txt"
    lines = poses_path.read_text().splitlines()
    poses_path.write_text("\n".join(["nan nan nan nan"] * 4 + lines[4:]) + "\n")
    assert NRGBD(root).read_sequence("kitchen")["frames"] == [
        2,
        4,
    ]  # an unknown pose drops its keyframe
    poses_path.write_text("\n".join(lines[:-4]) + "\n")
    with pytest.raises(ValueError, match="4 poses for 5 images"):
        NRGBD(root).read_sequence("kitchen")
    poses_path.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match="4 lines of 4 numbers"):
        NRGBD(root).read_sequence("kitchen")
    poses_path.unlink()
    with pytest.raises(FileNotFoundError, match="poses.txt"):
        NRGBD(root).read_sequence("kitchen")
    with pytest.raises(ValueError, match="no 'train' split"):
        NRGBD(root).list_sequences(split="train")


def test_bad_protocol_inputs(seven_scenes, loaded, tiny):
    sequence, gt = loaded
    with pytest.raises(ValueError, match=r"\[S, H, W, 3\]"):
        pc.pointcloud_metrics(gt[..., :2], gt, sequence["valid"])
    with pytest.raises(ValueError, match="valid must be"):
        pc.pointcloud_metrics(gt, gt, sequence["valid"][0])
    with pytest.raises(ValueError, match="central windows"):
        pc.pointcloud_metrics(gt, gt, np.zeros_like(sequence["valid"]))
    root = seven_scenes[0]
    with pytest.raises(ValueError, match="at least 2: lower kf_every"):
        pc.evaluate_pointclouds(tiny, "7scenes", root, image_size=112, progress=False)
    with pytest.raises(ValueError, match="reference has predictions for 1 sequences"):
        pc.evaluate_pointclouds(
            tiny, "7scenes", root, kf_every=1, image_size=112, reference=[{}], progress=False
        )
    with pytest.raises(ValueError, match="max_sequences"):
        pc.evaluate_pointclouds(tiny, "7scenes", root, max_sequences=0, progress=False)


@pytest.mark.parametrize("dataset", ["7scenes", "nrgbd"])
def test_qvggt_eval_runs_the_pointcloud_protocol_with_fidelity(seven_scenes, nrgbd, dataset, tmp_path, capsys):
    from qvggt_lib.cli import main

    root = {"7scenes": seven_scenes, "nrgbd": nrgbd}[dataset][0]
    out = tmp_path / "eval.json"
    argv = ["eval", "--data", dataset, "--data-dir", str(root), "--kf-every", "2", "--max-sequences", "1",
            "--reference", "tiny", "--json", str(out), "--threads", "1", "--no-progress"]
    assert main(argv) == 0
    assert f"{dataset}, 1 test sequences, a keyframe every 2 frames, at 112 px" in capsys.readouterr().out
    results = json.loads(out.read_text())
    assert results["fidelity"]["points_rel_diff"] == 0.0  # the model against itself
    assert all(results[key] is not None for key in pc.METRIC_KEYS)
