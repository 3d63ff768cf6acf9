"""Co3Dv2 reader and VGGT's camera-pose protocol on a rendered fixture in the exact upstream formats."""
from __future__ import annotations

import gzip
import json
import random
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from co3d_fixture import fixture_sequences, write_annotations, write_co3d_fixture
from scipy.spatial.transform import Rotation

from qvggt_lib.data.co3d import (
    CO3D_CATEGORIES,
    co3d_calibration_pool,
    load_sequence,
    opencv_to_pytorch3d,
    pixel_intrinsics,
    pytorch3d_to_opencv,
    read_annotations,
    sample_frames,
    usable_sequence,
)
from qvggt_lib.eval.co3d import FIDELITY_KEYS, METRIC_KEYS, evaluate_co3d
from qvggt_lib.geometry import extri_intri_to_pose_encoding
from qvggt_lib.io import load_and_preprocess_images

CATEGORIES = ("apple", "bench")
FIXTURE = {"categories": CATEGORIES, "sequences_per_category": 2, "frames_per_sequence": 12,
           "image_size": 56, "seed": 0}
RUN_SETTINGS = {"num_frames": 4, "min_frames": 8, "progress": False}
RUN = {"categories": CATEGORIES, **RUN_SETTINGS}
FRAME_NAME = re.compile(r"^(apple|bench)/\d+_\d+_\d+/images/frame\d{6}\.jpg$")


@pytest.fixture(scope="module")
def co3d(tmp_path_factory):
    return write_co3d_fixture(tmp_path_factory.mktemp("co3d"), **FIXTURE)


class TruePoseModel(torch.nn.Module):
    """A stand-in VGGT whose pose encoding is the renderer's true camera of each frame it is shown
    (found by pixel content); ``perturb_deg`` turns the first frame's camera about its optical axis."""

    def __init__(self, co3d_dir, image_size=56, perturb_deg=0.0):
        super().__init__()
        self.config = SimpleNamespace(img_size=image_size)
        self.turn = Rotation.from_euler("z", perturb_deg, degrees=True).as_matrix()
        self.cameras = {}
        for split, category, name, scene in fixture_sequences(**FIXTURE):
            paths = [co3d_dir / f"{category}/{name}/images/frame{i + 1:06d}.jpg"
                     for i in range(len(scene["images"]))]
            images = load_and_preprocess_images(paths, size=image_size)
            for image, camera in zip(images, scene["extrinsics"]):
                self.cameras[image.numpy().tobytes()] = camera.astype(np.float64)

    def forward(self, images):
        extrinsics = np.stack([self.cameras[image.numpy().tobytes()] for image in images])
        extrinsics[0] = self.turn @ extrinsics[0]  # [R | t] -> [Q R | Q t]: camera 0 turned by Q
        num_frames, _, height, width = images.shape
        intrinsics = torch.tensor([[width, 0, width / 2], [0, width, height / 2], [0, 0, 1.0]])
        pose_enc = extri_intri_to_pose_encoding(torch.from_numpy(extrinsics)[None],
                                                intrinsics.expand(1, num_frames, 3, 3), (height, width))
        zeros = torch.zeros(1, num_frames, height, width)
        return {"pose_enc": pose_enc, "depth": zeros[..., None], "depth_conf": zeros,
                "world_points": zeros[..., None].expand(-1, -1, -1, -1, 3), "world_points_conf": zeros}


def test_fixture_is_in_upstream_layout_and_cameras_round_trip(co3d):
    co3d_dir, anno_dir = co3d
    assert sorted(p.name for p in anno_dir.iterdir()) == [
        "apple_test.jgz", "apple_train.jgz", "bench_test.jgz", "bench_train.jgz"]
    for split, category, name, scene in fixture_sequences(**FIXTURE):
        frames = read_annotations(anno_dir, category, split)[name]
        assert len(frames) == FIXTURE["frames_per_sequence"]
        for frame, extrinsics, intrinsics in zip(frames, scene["extrinsics"], scene["intrinsics"]):
            assert set(frame) == {"filepath", "R", "T", "focal_length", "principal_point"}
            assert FRAME_NAME.match(frame["filepath"]) and (co3d_dir / frame["filepath"]).is_file()
            opencv = pytorch3d_to_opencv(frame["R"], frame["T"])
            np.testing.assert_allclose(opencv, extrinsics, atol=1e-6)
            K = pixel_intrinsics(frame["focal_length"], frame["principal_point"], 56, 56)
            np.testing.assert_allclose(K, intrinsics, atol=1e-6)
    sequence = load_sequence(co3d_dir, frames[:3], image_size=28)
    assert sequence["images"].shape == (3, 3, 28, 28) and sequence["extrinsics"].dtype == np.float64
    np.testing.assert_allclose(sequence["extrinsics"], scene["extrinsics"][:3], atol=1e-6)


def test_pytorch3d_convention_and_exact_inverse():
    rng = np.random.default_rng(0)
    R, T = Rotation.random(5, random_state=1).as_matrix(), rng.normal(size=(5, 3))
    extrinsics = pytorch3d_to_opencv(R, T)
    point = rng.normal(size=3)
    for r, t, e in zip(R, T, extrinsics):  # PyTorch3D camera x R + T, OpenCV = its x and y negated
        np.testing.assert_allclose(e[:, :3] @ point + e[:, 3], (point @ r + t) * [-1, -1, 1], atol=1e-12)
    back_R, back_T = opencv_to_pytorch3d(extrinsics)
    np.testing.assert_array_equal(back_R, R)
    np.testing.assert_array_equal(back_T, T)
    np.testing.assert_array_equal(pytorch3d_to_opencv(np.eye(3), [1, 2, 3]),
                                  [[-1, 0, 0, -1], [0, -1, 0, -2], [0, 0, 1, 3]])


def test_true_cameras_score_100(co3d):
    results = evaluate_co3d(TruePoseModel(co3d[0]), *co3d, **RUN)
    assert {key: results[key] for key in METRIC_KEYS} == pytest.approx(dict.fromkeys(METRIC_KEYS, 100.0))
    assert results["num_sequences"] == 4 and results["num_skipped"] == 0
    assert results["categories"] == list(CATEGORIES) and results["image_size"] == 56


def test_one_turned_camera_gives_the_hand_computed_aucs(co3d):
    # 4 frames: 6 pairs, the 3 with frame 0 are off by exactly 10.5 degrees (rotation; their
    # translation direction turns by at most that), the other 3 by 0. AUC@T = mean over
    # k = 1..T of the share of pairs under k degrees: 1/2 for k <= 10, 1 above.
    results = evaluate_co3d(TruePoseModel(co3d[0], perturb_deg=10.5), *co3d, **RUN)
    expected = {"auc30": 100 * (10 * 0.5 + 20) / 30, "auc15": 100 * (10 * 0.5 + 5) / 15,
                "auc5": 50.0, "auc3": 50.0, "rra30": 100.0, "rta30": 100.0}
    assert {key: results[key] for key in METRIC_KEYS} == pytest.approx(expected)
    for category in CATEGORIES:
        assert results["per_category"][category]["auc30"] == pytest.approx(expected["auc30"])


def test_sequences_under_min_frames_are_skipped(tmp_path):
    co3d_dir, anno_dir = write_co3d_fixture(tmp_path, **FIXTURE)
    apple = read_annotations(anno_dir, "apple")
    first = min(apple)
    apple[first] = apple[first][:7]
    write_annotations(anno_dir, "apple", "test", apple)
    results = evaluate_co3d(TruePoseModel(co3d_dir), co3d_dir, anno_dir, **RUN)
    assert results["per_category"]["apple"]["num_sequences"] == 1
    assert results["per_category"]["apple"]["num_skipped"] == 1
    assert (results["num_sequences"], results["num_skipped"]) == (3, 1)


def test_the_50_frame_rule_on_annotations_only(tmp_path):
    frame = {"filepath": "apple/1_2_3/images/frame000001.jpg", "R": np.eye(3).tolist(),
             "T": [0.0, 0.0, 1.0]}
    assert not usable_sequence([frame] * 49) and usable_sequence([frame] * 50)
    assert not usable_sequence([frame] * 49 + [{**frame, "T": [1e5, 0.0, 1.0]}])  # T_x + T_y + T_z > 1e5
    no_model = None  # no sequence gets as far as the model
    write_annotations(tmp_path, "apple", "test", {"1_2_3": [frame] * 49})
    with pytest.raises(ValueError, match=">= 50 frames"):
        evaluate_co3d(no_model, tmp_path, tmp_path, categories=["apple"], image_size=56, progress=False)
    write_annotations(tmp_path, "apple", "test", {"1_2_3": [frame] * 50})  # used: it asks for its images
    with pytest.raises(FileNotFoundError, match=r"frame000001\.jpg"):
        evaluate_co3d(no_model, tmp_path, tmp_path, categories=["apple"], image_size=56, progress=False)


def test_frame_sampling_is_seeded_and_follows_upstreams_numpy_stream(co3d):
    np.random.seed(0)  # upstream: np.random.seed(seed) once, then np.random.choice per sequence
    upstream = [np.random.choice(60, 10, replace=False) for _ in range(3)]
    rng = np.random.RandomState(0)
    for ids in upstream:
        np.testing.assert_array_equal(sample_frames(60, 10, rng), ids)
    model = TruePoseModel(co3d[0])

    def frame_ids(**kwargs):
        results = evaluate_co3d(model, *co3d, keep_predictions=True, **{**RUN, **kwargs})
        return [(p["sequence"], p["frame_ids"]) for p in results["predictions"]]

    assert frame_ids(seed=0) == frame_ids(seed=0)
    assert frame_ids(seed=0) != frame_ids(seed=1)
    random.seed(0)  # upstream --fast_eval: random.sample(sorted names, k) per category, same stream
    fast_eval = [random.sample(sorted(read_annotations(co3d[1], c)), 1)[0] for c in CATEGORIES]
    assert [sequence for sequence, _ in frame_ids(max_sequences=1)] == fast_eval


def test_bad_inputs_name_the_problem(co3d, tmp_path):
    co3d_dir, anno_dir = co3d
    with pytest.raises(FileNotFoundError, match=r"apple_test\.jgz.*preprocess_co3d"):
        read_annotations(tmp_path, "apple")
    (tmp_path / "apple_test.jgz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="gzip-compressed JSON"):
        read_annotations(tmp_path, "apple")
    with gzip.open(tmp_path / "bench_test.jgz", "wt") as file:
        frame = {"filepath": "bench/1_2_3/images/frame000001.jpg", "R": np.eye(3).tolist()}
        json.dump({"1_2_3": [frame]}, file)
    with pytest.raises(ValueError, match=r"'1_2_3' frame 0 has no 'T' field"):
        read_annotations(tmp_path, "bench")
    frames = next(iter(read_annotations(anno_dir, "apple").values()))
    with pytest.raises(FileNotFoundError, match=r"missing\.jpg"):
        load_sequence(co3d_dir, [{**frames[0], "filepath": "apple/x/images/missing.jpg"}])
    with gzip.open(tmp_path / "bench_test.jgz", "wt") as file:
        json.dump({"1_2_3": [{**frames[0], "R": [[1, 0], [0, 1]]}]}, file)
    with pytest.raises(ValueError, match=r"'R' must be \[3, 3\] numbers"):
        read_annotations(tmp_path, "bench")
    model = TruePoseModel(co3d_dir)
    with pytest.raises(ValueError, match="unknown Co3D categories.*'sofa'"):
        evaluate_co3d(model, co3d_dir, anno_dir, categories=["apple", "sofa"], progress=False)
    with pytest.raises(FileNotFoundError, match=r"car_test\.jgz"):
        evaluate_co3d(model, co3d_dir, anno_dir, categories=["apple", "car"], **RUN_SETTINGS)
    with pytest.raises(ValueError, match="min_frames"):
        evaluate_co3d(model, co3d_dir, anno_dir, num_frames=10, min_frames=8, progress=False)
    assert len(CO3D_CATEGORIES) == len(set(CO3D_CATEGORIES)) == 41


def test_calibration_pool_from_training_sequences(co3d):
    kwargs = {"categories": CATEGORIES, "num_frames": 4, "image_size": 28, "min_frames": 8}
    pool = co3d_calibration_pool(*co3d, num_candidates=3, **kwargs)
    assert len(pool) == 3 and all(scene.shape == (4, 3, 28, 28) for scene in pool)
    category_of_frame = {}
    for category in CATEGORIES:
        for frames in read_annotations(co3d[1], category, "train").values():
            for image in load_sequence(co3d[0], frames, 28, mode="pad")["images"]:
                category_of_frame[image.numpy().tobytes()] = category
    dealt = [{category_of_frame[image.numpy().tobytes()] for image in scene} for scene in pool]
    assert dealt == [{"apple"}, {"bench"}, {"apple"}]  # round-robin over categories, train split only
    again = co3d_calibration_pool(*co3d, num_candidates=3, **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(pool, again))
    with pytest.raises(ValueError, match="only 4 usable train sequences"):
        co3d_calibration_pool(*co3d, num_candidates=5, **kwargs)


def test_tiny_model_end_to_end_with_fidelity_to_itself(co3d):
    from qvggt_lib.model import load_pretrained

    model = load_pretrained("tiny")
    first = evaluate_co3d(model, *co3d, keep_predictions=True, **RUN)
    assert first["image_size"] == 112 and len(first["predictions"]) == 4
    assert all(0 <= first[key] <= 100 for key in METRIC_KEYS)
    second = evaluate_co3d(model, *co3d, reference=first["predictions"], **RUN)
    expected = {**dict.fromkeys(FIDELITY_KEYS, 100.0), "rotation_diff_deg": 0.0}
    assert second["fidelity"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="same categories"):
        evaluate_co3d(model, *co3d, reference=first["predictions"], **{**RUN, "seed": 1})
