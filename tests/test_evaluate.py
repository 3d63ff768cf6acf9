"""qvggt_lib.eval.evaluate and `qvggt eval` on a randomly initialised tiny model (small, fast scenes)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from qvggt_lib.cli import main
from qvggt_lib.eval import evaluate as ev
from qvggt_lib.eval.tables import format_table
from qvggt_lib.model import build_vggt, save_checkpoint

SMALL = {"num_scenes": 2, "num_frames": 3, "image_size": 56, "progress": False}
SCALAR_KEYS = {"num_scenes", "num_frames", "seed"}


@pytest.fixture(scope="module")
def model():
    return build_vggt("tiny", seed=0).eval()


@pytest.fixture(scope="module")
def results(model):
    return ev.evaluate(model, **SMALL)


def test_metric_keys_present_and_finite(results):
    assert set(ev.METRIC_KEYS) | SCALAR_KEYS | {"baselines", "per_scene"} <= set(results)
    for key in ev.METRIC_KEYS:
        assert math.isfinite(results[key]), key
    assert (results["num_scenes"], results["num_frames"], results["seed"]) == (2, 3, 0)
    assert 0 <= results["auc3"] <= results["auc5"] <= results["auc15"] <= results["auc30"] <= 100
    assert [scene["index"] for scene in results["per_scene"]] == [0, 1]
    for key in ev.METRIC_KEYS:
        assert results[key] == pytest.approx(np.mean([s[key] for s in results["per_scene"]]))


def test_deterministic(model, results):
    again = ev.evaluate(model, **SMALL)
    assert json.dumps(again, sort_keys=True) == json.dumps(results, sort_keys=True)


def test_trivial_baseline(results):
    baseline = results["baselines"]["trivial"]
    assert set(baseline) == set(ev.METRIC_KEYS)
    assert all(math.isfinite(baseline[key]) for key in ev.METRIC_KEYS)
    # zero translations have no direction: 90 degrees off by convention, so no pose accuracy
    assert baseline["auc30"] == 0 and baseline["rta30"] == 0
    assert 0 < baseline["depth_abs_rel"] and 0 <= baseline["depth_delta1"] < 1


def test_no_baselines(model):
    assert ev.evaluate(model, **{**SMALL, "num_scenes": 1}, baselines=False)["baselines"] == {}


def test_perfect_prediction_scores_perfectly(model, monkeypatch):
    """Feeding the ground truth through the same pipeline gives AUC 100, AbsRel 0, Acc 0."""
    from qvggt_lib.data import render_split

    def ground_truth(_model, images):
        for index in range(SMALL["num_scenes"]):
            gt = render_split("test", index, num_frames=SMALL["num_frames"], image_size=SMALL["image_size"])
            if np.array_equal(gt["images"], images):
                return {k: gt[k] for k in ("extrinsics", "intrinsics", "depth", "world_points")}
        raise AssertionError("unexpected scene")

    monkeypatch.setattr(ev, "predict_scene", ground_truth)
    perfect = ev.evaluate(model, **SMALL, baselines=False)
    for key in ("auc30", "auc15", "auc5", "auc3", "rra30", "rta30"):
        assert perfect[key] == pytest.approx(100.0), key
    assert perfect["depth_abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert perfect["depth_delta1"] == pytest.approx(1.0)
    assert perfect["point_acc"] == pytest.approx(0.0, abs=1e-4)
    assert perfect["point_comp"] == pytest.approx(0.0, abs=1e-4)
    assert perfect["point_nc"] == pytest.approx(1.0, abs=1e-4)


def test_predict_scene_shapes(model):
    images = np.random.default_rng(0).random((2, 3, 28, 42), dtype=np.float32)
    model.train()
    pred = ev.predict_scene(model, images)
    assert model.training  # the mode is restored
    model.eval()
    shapes = {k: v.shape for k, v in pred.items()}
    assert shapes == {
        "extrinsics": (2, 3, 4), "intrinsics": (2, 3, 3), "depth": (2, 28, 42),
        "depth_conf": (2, 28, 42), "world_points": (2, 28, 42, 3), "world_points_conf": (2, 28, 42),
    }
    assert pred["intrinsics"][0, 0, 2] == pytest.approx(21) and pred["intrinsics"][0, 1, 2] == pytest.approx(14)


def test_format_table(results):
    table = format_table(results)
    lines = table.splitlines()
    for header in ("AUC@30", "AUC@15", "AUC@5", "AUC@3", "RRA@30", "RTA@30", "AbsRel", "δ1",
                   "Acc", "Comp", "NC"):
        assert header in lines[0]
    assert lines[2].startswith("| model |") and lines[3].startswith("| trivial baseline |")
    two = format_table({"fp32": results, "w4a8": results})
    assert [line.split("|")[1].strip() for line in two.splitlines()[2:]] == ["fp32", "w4a8", "trivial baseline"]


def test_save_json_roundtrip(results, tmp_path):
    path = ev.save_json({**results, "nan": float("nan"), "np": np.float32(1.5)}, tmp_path / "a" / "r.json")
    loaded = json.loads(path.read_text())
    assert loaded["nan"] is None and loaded["np"] == 1.5 and loaded["auc30"] == results["auc30"]


def test_cli_eval_checkpoint(tmp_path, capsys):
    checkpoint = save_checkpoint(build_vggt("tiny", seed=1), tmp_path / "random.safetensors")
    out = tmp_path / "eval.json"
    rc = main(["eval", "--checkpoint", str(checkpoint), "--scenes", "1", "--frames", "2", "--seed", "3",
               "--image-size", "56", "--json", str(out), "--threads", "1", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "AUC@30" in printed and "| random |" in printed and "trivial baseline" in printed
    data = json.loads(out.read_text())
    assert set(ev.METRIC_KEYS) | SCALAR_KEYS | {"baselines"} <= set(data)
    assert (data["num_scenes"], data["num_frames"], data["seed"]) == (1, 2, 3)
    assert set(data["baselines"]["trivial"]) == set(ev.METRIC_KEYS)


def test_bad_split_or_range(model):
    with pytest.raises(ValueError, match="unknown split"):
        ev.evaluate(model, split="val", **SMALL)
    with pytest.raises(ValueError, match="outside"):
        ev.evaluate(model, seed=-1, **SMALL)


def test_cli_eval_missing_checkpoint(tmp_path, capsys):
    rc = main(["eval", "--checkpoint", str(tmp_path / "nope.safetensors"), "--scenes", "1"])
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err


def test_fidelity_to_a_reference_model(model):
    ref = ev.evaluate(model, **SMALL, baselines=False, keep_predictions=True)
    assert len(ref["predictions"]) == 2 and ref["predictions"][0]["depth"].shape == (3, 56, 56)
    same = ev.evaluate(model, **SMALL, baselines=False, reference=ref["predictions"])
    assert same["fidelity"] == {**{key: 0.0 for key in ev.FIDELITY_KEYS}, **{key: 100.0 for key in ev.POSE_FIDELITY_KEYS}}
    other = build_vggt("tiny", seed=1).eval()
    diff = ev.evaluate(other, **SMALL, baselines=False, reference=ref["predictions"])["fidelity"]
    assert all(diff[key] > 0 for key in ev.FIDELITY_KEYS)
    assert all(diff[key] < 100 for key in ev.POSE_FIDELITY_KEYS)
    # tables take the distances beside the metrics; the pose AUCs would shadow the ground-truth ones
    flat = ev.with_fidelity({**same, "fidelity": diff})
    assert flat["auc30"] == same["auc30"] and flat["depth_rel_diff"] == diff["depth_rel_diff"]
    assert flat["fidelity_auc5"] == diff["auc5"]
    with pytest.raises(ValueError, match="reference has predictions for 2 scenes"):
        ev.evaluate(model, **{**SMALL, "num_scenes": 1}, reference=ref["predictions"])


def test_fidelity_metrics_known_values():
    rot = np.stack([np.eye(3), np.eye(3)])
    angle = np.radians(10.5)  # off the integer thresholds of the AUC histogram
    turned = rot.copy()
    turned[1, :2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    ones = np.ones((2, 4, 4))
    translations = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])[:, :, None]
    ref = {"depth": ones, "world_points": np.ones((2, 4, 4, 3)), "extrinsics": np.concatenate((rot, translations), -1)}
    pred = {"depth": 1.1 * ones, "world_points": 0.5 * np.ones((2, 4, 4, 3)),
            "extrinsics": np.concatenate((turned, translations), -1)}
    got = ev.fidelity_metrics(pred, ref, ones.astype(bool))
    assert got["depth_rel_diff"] == pytest.approx(10.0)
    assert got["points_rel_diff"] == pytest.approx(50.0)
    assert got["rotation_diff_deg"] == pytest.approx(5.25)  # mean of 0 and 10.5 degrees
    # one camera pair, relative rotation 10.5 degrees off, relative translation exact: its error is
    # below the integer thresholds 11..30 (20 of 30), 11..15 (5 of 15), none of 1..5 or 1..3
    assert [got[f"auc{t}"] for t in (30, 15, 5, 3)] == pytest.approx([200 / 3, 100 / 3, 0.0, 0.0])


def test_cli_eval_reference_prints_and_writes_pose_fidelity(tmp_path, capsys):
    checkpoint = save_checkpoint(build_vggt("tiny", seed=1), tmp_path / "random.safetensors")
    other = save_checkpoint(build_vggt("tiny", seed=2), tmp_path / "other.safetensors")
    out = tmp_path / "eval.json"
    common = ["--scenes", "1", "--frames", "3", "--image-size", "56", "--threads", "1", "--no-progress",
              "--no-baselines"]
    assert main(["eval", "--checkpoint", str(checkpoint), "--reference", str(checkpoint), "--json", str(out),
                 *common]) == 0
    printed = capsys.readouterr().out
    assert "fidelity to random" in printed and "AUC@5 vs ref." in printed
    fidelity = json.loads(out.read_text())["fidelity"]
    assert [fidelity[f"auc{t}"] for t in (30, 15, 5, 3)] == [100.0] * 4 and fidelity["depth_rel_diff"] == 0.0
    assert main(["eval", "--checkpoint", str(checkpoint), "--reference", str(other), "--json", str(out),
                 *common]) == 0
    fidelity = json.loads(out.read_text())["fidelity"]
    assert fidelity["auc3"] < 100 and fidelity["points_rel_diff"] > 0
    assert main(["eval", "--checkpoint", str(checkpoint), "--reference", str(tmp_path / "nope"), *common]) == 2
    assert "nor is it a shipped model" in capsys.readouterr().err


def test_cli_table_scores_fidelity_to_the_float_model(tmp_path, capsys):
    out = tmp_path / "table.json"
    assert main(["table", "--methods", "rtn", "--bits", "w4a4", "--scenes", "1", "--frames", "3", "--calib", "random",
                 "--calib-size", "1", "--calib-pool", "2", "--calib-frames", "2", "--threads", "1", "--no-progress",
                 "--json", str(out)]) == 0
    assert "| RTN W4A4 |" in capsys.readouterr().out.split("fidelity to FP")[1]
    rows = json.loads(out.read_text())["rows"]
    assert "fidelity" not in rows[0]["metrics"] and "predictions" not in rows[0]["metrics"]
    assert set(ev.FIDELITY_KEYS) | set(ev.POSE_FIDELITY_KEYS) == set(rows[1]["metrics"]["fidelity"])
