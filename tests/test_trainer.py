"""The CPU trainer: a two-step run, its outputs, resume, and the shared optimisation step."""

import json

import torch

from qvggt_lib.model import build_vggt, load_model
from qvggt_lib.train.trainer import TrainConfig, learning_rate, make_optimizer, train, train_step

TINY_RUN = {"steps": 2, "frames_per_step": 2, "min_frames": 2, "max_frames": 2, "bank_prefill": 2,
            "bank_size": 4, "new_scenes_per_step": 1, "checkpoint_every": 1, "snapshot_every": 2,
            "log_every": 1, "threads": 1, "warmup_steps": 1}


def test_two_steps_then_resume(tmp_path):
    cfg = TrainConfig(**TINY_RUN, out_dir=str(tmp_path))
    final = train(cfg)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert all(torch.isfinite(torch.tensor(r["loss"])) and r["frames"] == 2 for r in log)
    assert (tmp_path / "snapshots" / "step_000002.safetensors").is_file()
    assert torch.load(tmp_path / "last.pt", weights_only=False)["step"] == 2
    model = load_model(final)
    assert not model.training
    train(TrainConfig(**{**TINY_RUN, "steps": 3}, out_dir=str(tmp_path)))  # resumes at step 2
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]


def test_train_step_updates_the_weights_at_the_scheduled_rate():
    torch.manual_seed(0)
    cfg = TrainConfig(lr=1e-3, warmup_steps=10, steps=100)
    model = build_vggt("tiny", img_size=28, intermediate_layer_idx=(0, 1, 2, 3)).train()
    optimizer = make_optimizer(model, cfg)
    batch = {"images": torch.rand(1, 2, 3, 28, 28), "depth": torch.rand(1, 2, 28, 28) + 1,
             "extrinsics": torch.eye(3, 4).repeat(1, 2, 1, 1), "intrinsics": torch.eye(3).repeat(1, 2, 1, 1),
             "world_points": torch.rand(1, 2, 28, 28, 3) + 1, "valid": torch.ones(1, 2, 28, 28, dtype=torch.bool)}
    batch["extrinsics"][0, 1, 0, 3] = 0.5  # the second camera is shifted
    before = model.camera_head.pose_branch.fc2.weight.clone()
    loss, lr, grad_norm, parts = train_step(model, optimizer, batch, cfg, step=4)
    assert lr == learning_rate(cfg, 4) == 5e-4  # warm-up: (4 + 1) / 10 of the peak
    assert torch.isfinite(loss) and not loss.requires_grad and grad_norm > 0
    assert set(parts) == {"camera", "depth", "depth_grad", "point", "point_grad"}
    assert not torch.equal(before, model.camera_head.pose_branch.fc2.weight)
