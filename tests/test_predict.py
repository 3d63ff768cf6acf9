"""Your own images: scene folders, `qvggt predict` (.npz + .ply), calibration on image folders, and
loading an official-style checkpoint without a second copy of the weights."""

import numpy as np
import pytest
import torch
from PIL import Image
from plyfile import PlyData

from qvggt_lib.cli import main
from qvggt_lib.data import render_split
from qvggt_lib.data.image_folders import image_folder_pool, image_scenes, spread_frames
from qvggt_lib.eval.evaluate import predict_scene
from qvggt_lib.export import PREDICTION_KEYS, colored_points, write_ply
from qvggt_lib.io import load_and_preprocess_images
from qvggt_lib.model import load_pretrained
from qvggt_lib.model.checkpoint import load_official


def write_scene_folder(folder, index=0, frames=3, size=112):
    """A rendered test scene as PNG files frame_000.png, frame_001.png, ... (exact 8-bit pixels)."""
    folder.mkdir(parents=True, exist_ok=True)
    scene = render_split("test", index, num_frames=frames, image_size=size)
    for i, image in enumerate(scene["images"]):
        pixels = np.round(np.moveaxis(image, 0, -1) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"frame_{i:03d}.png")
    return scene


@pytest.fixture(scope="module")
def tiny():
    return load_pretrained("tiny")


def test_image_scenes_reads_one_folder_or_a_folder_of_folders(tmp_path):
    write_scene_folder(tmp_path / "b_scene", 0, frames=2)
    write_scene_folder(tmp_path / "a_scene", 1, frames=3)
    (tmp_path / "notes").mkdir()  # a folder without images is not a scene
    (tmp_path / "a_scene" / ".hidden.png").write_bytes(b"")
    (tmp_path / "a_scene" / "readme.txt").write_text("not an image")
    scenes = image_scenes(tmp_path)
    assert list(scenes) == ["a_scene", "b_scene"]
    assert [p.name for p in scenes["a_scene"]] == ["frame_000.png", "frame_001.png", "frame_002.png"]
    assert list(image_scenes(tmp_path / "b_scene")) == ["b_scene"]


def test_image_scenes_refuses_mixed_empty_and_missing_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        image_scenes(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        image_scenes(tmp_path / "empty")
    write_scene_folder(tmp_path / "mixed" / "inner", 0, frames=2)
    write_scene_folder(tmp_path / "mixed", 1, frames=2)
    with pytest.raises(ValueError, match="also subfolders of images"):
        image_scenes(tmp_path / "mixed")


def test_spread_frames_covers_every_frame_once_and_spans_the_sequence():
    groups = spread_frames(10, 3)
    assert groups == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    assert spread_frames(2, 3) == []


def test_image_folder_pool_gives_candidates_per_scene_and_names_short_scenes(tmp_path):
    write_scene_folder(tmp_path / "s0", 0, frames=4)
    write_scene_folder(tmp_path / "s1", 1, frames=3)
    pool = image_folder_pool(tmp_path, num_frames=2, image_size=56)
    assert len(pool) == 2 + 1 and all(c.shape == (2, 3, 56, 56) for c in pool)
    with pytest.raises(ValueError, match=r"s1 \(3\)"):
        image_folder_pool(tmp_path, num_frames=4, image_size=56)


def test_predict_writes_every_output_and_a_ply_that_plyfile_reads(tmp_path, tiny):
    write_scene_folder(tmp_path / "photos", 0, frames=3)
    out, ply = tmp_path / "out" / "preds.npz", tmp_path / "out" / "points.ply"
    assert main(["predict", "--images", str(tmp_path / "photos"), "--out", str(out), "--ply", str(ply),
                 "--threads", "1"]) == 0
    saved = np.load(out)
    images = load_and_preprocess_images(sorted((tmp_path / "photos").iterdir()), size=112)
    expected = predict_scene(tiny, images)
    for key in PREDICTION_KEYS:  # the same model on the same pixels: the same numbers
        np.testing.assert_array_equal(saved[key], expected[key])
    np.testing.assert_array_equal(saved["images"], images.numpy())
    assert saved["extrinsics"].shape == (3, 3, 4) and saved["world_points"].shape == (3, 112, 112, 3)
    assert [p.split("/")[-1] for p in saved["image_paths"]] == ["frame_000.png", "frame_001.png", "frame_002.png"]
    assert ply.read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\n")
    vertex = PlyData.read(str(ply))["vertex"]
    points, colors = colored_points(expected, images, "depth", 0.5)
    assert vertex.count == len(points) >= 3 * 112 * 112 // 2  # the more confident half, ties kept
    np.testing.assert_array_equal(np.stack([vertex[a] for a in "xyz"], -1), points)
    np.testing.assert_array_equal(np.stack([vertex[c] for c in ("red", "green", "blue")], -1), colors)


def test_predict_on_several_scenes_writes_one_file_per_scene(tmp_path):
    write_scene_folder(tmp_path / "photos" / "kitchen", 0, frames=2)
    write_scene_folder(tmp_path / "photos" / "garden", 1, frames=2)
    out = tmp_path / "preds.npz"
    assert main(["predict", "--images", str(tmp_path / "photos"), "--out", str(out), "--threads", "1"]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == ["preds_garden.npz", "preds_kitchen.npz"]


@pytest.mark.parametrize("argv, message", [
    (["--out", "x.npy"], "must end in .npz"),
    (["--out", "x.npz", "--ply", "x.obj"], "must end in .ply"),
])
def test_predict_names_bad_output_paths(tmp_path, capsys, argv, message):
    write_scene_folder(tmp_path / "photos", 0, frames=2)
    argv = [a if not a.startswith("x.") else str(tmp_path / a) for a in argv]
    assert main(["predict", "--images", str(tmp_path / "photos"), *argv]) == 2
    assert message in capsys.readouterr().err


def test_depth_branch_points_are_the_true_points_when_depth_and_cameras_are_true():
    scene = render_split("test", 0, num_frames=2, image_size=56)
    truth = {"depth": scene["depth"], "extrinsics": scene["extrinsics"], "intrinsics": scene["intrinsics"],
             "depth_conf": np.where(scene["valid"], 2.0, 1.0)}  # the valid pixels are the confident ones
    points, colors = colored_points(truth, scene["images"], "depth", keep=scene["valid"].mean())
    np.testing.assert_allclose(points, scene["world_points"][scene["valid"]], atol=1e-4)  # float32 unprojection
    assert colors.dtype == np.uint8 and len(colors) == scene["valid"].sum()


def test_write_ply_refuses_mismatched_arrays(tmp_path):
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        write_ply(tmp_path / "x.ply", np.zeros((4, 3)), np.zeros((3, 3), np.uint8))


def test_quantize_calibrates_on_image_folders(tmp_path, capsys):
    for i in range(3):
        write_scene_folder(tmp_path / "calib" / f"scene{i}", i, frames=4)
    out = tmp_path / "q.safetensors"
    argv = ["quantize", "--model", "tiny", "--method", "smoothquant", "--bits", "w8a8", "--calib", "nfds",
            "--calib-images", str(tmp_path / "calib"), "--calib-frames", "2", "--calib-size", "4", "--calib-clusters", "2",
            "--out", str(out), "--threads", "1", "--no-progress"]
    assert main(argv) == 0 and out.is_file()
    assert "4 nfds scenes of 2 frames from a pool of 6 candidates" in capsys.readouterr().out
    argv[argv.index("--calib-size") + 1] = "7"
    assert main(argv) == 2
    assert "gives 6 calibration candidates" in capsys.readouterr().err


def test_official_checkpoint_loads_onto_a_meta_built_model_with_the_same_outputs(tmp_path, tiny):
    path = tmp_path / "model.pt"
    torch.save(tiny.state_dict(), path)  # an official-style file: a plain state dict, no metadata
    model = load_official(path, config="tiny")
    assert not any(t.is_meta for t in (*model.parameters(), *model.buffers())) and not model.training
    images = torch.rand(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected, got = tiny(images), model(images)
    assert all(torch.equal(expected[k], got[k]) for k in expected if isinstance(got[k], torch.Tensor))
    with pytest.raises(Exception, match="read as the official vggt-1b checkpoint"):
        load_official(path)  # tiny weights are not VGGT-1B's: the error says what was assumed


@pytest.mark.parametrize("keep", [0.0, 1.5])
def test_colored_points_refuses_a_keep_fraction_outside_0_1(keep):
    scene = render_split("test", 0, num_frames=2, image_size=56)
    truth = {"depth": scene["depth"], "extrinsics": scene["extrinsics"], "intrinsics": scene["intrinsics"],
             "depth_conf": np.ones_like(scene["depth"])}
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        colored_points(truth, scene["images"], "depth", keep)
