"""The GPU trainer's data path (qvggt_lib.train.gpu), on CPU: ring bank, batches, weight halves."""

import json
import multiprocessing as mp

import numpy as np
import pytest
import torch
from safetensors import safe_open

from qvggt_lib.model import build_vggt, load_model
from qvggt_lib.train import gpu as train_gpu


def fake_scene(value: int, size: int = 14) -> dict:
    frames = np.arange(8, dtype=np.float32)[:, None, None]  # frame f holds value + f/10
    plane = np.full((8, size, size), value, np.float32) + frames / 10
    return {
        "images": np.repeat(plane[:, None], 3, axis=1).astype(np.float16) / 100,
        "depth": plane,
        "extrinsics": np.full((8, 3, 4), value, np.float32),
        "intrinsics": np.full((8, 3, 3), value, np.float32),
        "world_points": np.repeat(plane[..., None], 3, axis=-1),
        "valid": np.ones((8, size, size), bool),
    }


def test_bank_is_a_ring_that_keeps_the_newest_scenes():
    bank = train_gpu.SceneBank(capacity=5, image_size=14, device="cpu")
    bank.add([fake_scene(i) for i in range(3)])
    assert (bank.size, bank.added) == (3, 3)
    bank.add([fake_scene(i) for i in range(3, 7)])  # wraps: slots 0, 1 overwritten by 5, 6
    assert bank.tensors["depth"][:, 0, 0, 0].tolist() == [5, 6, 2, 3, 4]
    bank.add([fake_scene(i) for i in range(7, 20)])  # more than the capacity at once: the newest 5
    assert sorted(bank.tensors["depth"][:, 0, 0, 0].tolist()) == [15, 16, 17, 18, 19]
    assert (bank.size, bank.added) == (5, 20)


def test_batches_take_distinct_scenes_and_distinct_frames_consistently_across_keys():
    bank = train_gpu.SceneBank(capacity=6, image_size=14, device="cpu")
    bank.add([fake_scene(10 * i) for i in range(6)])
    batch = bank.sample(4, 3, torch.Generator().manual_seed(0))
    assert batch["images"].shape == (4, 3, 3, 14, 14) and batch["images"].dtype == torch.float32
    depth = batch["depth"][:, :, 0, 0]  # value + frame/10
    scenes, frames = (depth // 10).int(), torch.round((depth % 10) * 10).int()
    assert all(len(set(row.tolist())) == 1 for row in scenes)  # one scene per batch row
    assert len(set(scenes[:, 0].tolist())) == 4  # B distinct scenes
    assert all(len(set(row.tolist())) == 3 for row in frames)  # S distinct frames
    torch.testing.assert_close(batch["images"][:, :, 0, 0, 0] * 100, depth, atol=0.05, rtol=0)
    torch.testing.assert_close(batch["extrinsics"][:, :, 0, 0], scenes.float() * 10)


def test_weight_halves_round_trip(tmp_path):
    model = build_vggt("tiny", seed=1)
    train_gpu.save_halves(model, tmp_path, {"step": "1"})
    state = train_gpu.load_halves(tmp_path)
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def _square(x):
    return x * x


def test_take_ready_returns_finished_results_in_order_without_waiting():
    with mp.get_context("spawn").Pool(1) as pool:
        pending = pool.imap(_square, range(10**6))
        assert pending.next(timeout=60) == 0  # the worker is up
        taken = []
        while len(taken) < 5:
            taken += train_gpu.take_ready(pending, limit=5 - len(taken))
        assert taken == [1, 4, 9, 16, 25]


def test_join_halves_writes_a_checkpoint_that_load_model_rebuilds(tmp_path):
    model = build_vggt("tiny", seed=2, init_values=0.1)
    train_gpu.save_halves(model, tmp_path, {"step": "7", "config": json.dumps(model.config.to_dict())})
    path = train_gpu.join_halves(tmp_path, tmp_path / "joined.safetensors", {"note": "test"})
    loaded = load_model(path)
    assert loaded.config == model.config
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["step"] == "7" and f.metadata()["note"] == "test"


def test_join_halves_without_a_stored_config_says_what_to_do(tmp_path):
    train_gpu.save_halves(build_vggt("tiny", seed=1), tmp_path, {"step": "1"})
    with pytest.raises(ValueError, match="no model configuration"):
        train_gpu.join_halves(tmp_path, tmp_path / "x.safetensors")


def test_settings_need_exactly_one_budget():
    with pytest.raises(ValueError, match="exactly one of minutes"):
        train_gpu.DeviceTrainSettings(out="x")
    with pytest.raises(ValueError, match="exactly one of minutes"):
        train_gpu.DeviceTrainSettings(out="x", minutes=1.0, steps=10)


def test_a_short_cpu_run_writes_weights_run_record_and_evaluation(tmp_path):
    settings = train_gpu.DeviceTrainSettings(
        out=str(tmp_path), steps=2, device="cpu", frames_per_step=8, warmup_steps=1, workers=1,
        prefill_workers=1, prefill=4, bank=8, eval_scenes=1)
    metrics = train_gpu.train_on_device(settings)
    assert {"auc30", "depth_abs_rel"} <= metrics.keys()
    assert (tmp_path / "log.jsonl").exists()  # one line every 20 steps: empty after 2
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["steps"] == 2 and run["settings"]["frames_per_step"] == 8
    assert json.loads((tmp_path / "eval.json").read_text())["num_scenes"] == 1
    state = train_gpu.load_halves(tmp_path)
    assert state.keys() == train_gpu.build_model(train_gpu.TrainConfig(steps=1)).state_dict().keys()
    assert all(torch.isfinite(t).all() for t in state.values())
