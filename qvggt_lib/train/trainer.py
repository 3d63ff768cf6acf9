"""Train a VGGT from scratch on procedurally rendered scenes (CPU friendly, resumable, seeded).

Data: rendering costs about as much as a training step on 2 cores, so scenes are
rendered once (8 frames each) into a bank of the ``bank_size`` most recent scenes;
each step adds ``new_scenes_per_step`` fresh scenes and draws its batch from the
bank. A step has ``frames_per_step`` frames split into B scenes of S frames, S drawn
uniformly in [min_frames, max_frames] (VGGT also varies the number of frames per
scene at a fixed frame budget), each scene contributing a random subset of S of its
8 frames. Everything is a pure function of (seed, step), so a resumed run sees
exactly the data an uninterrupted run would. AdamW with a warm-up/stable/decay
schedule, gradient clipping.

Outputs in ``out_dir``: ``last.pt`` (model + optimizer + step, for resume),
``snapshots/step_XXXXXX.safetensors`` (weights only, for activation statistics over
training), ``log.jsonl`` (one line per logged step) and ``final.safetensors``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset
from tqdm import tqdm

from ..data import render_split
from ..model import build_vggt, save_checkpoint
from .losses import vggt_loss

RENDERED_FRAMES = 8  # frames rendered per bank scene


@dataclass(frozen=True)
class TrainConfig:
    model: str = "tiny"
    init_values: float | None = None  # LayerScale init override for the model config
    steps: int = 3000
    frames_per_step: int = 16
    min_frames: int = 2
    max_frames: int = 8
    image_size: int = 112
    bank_size: int = 1000
    bank_prefill: int = 200
    new_scenes_per_step: int = 2
    arc_start_deg: float = 60.0  # camera arc (+- degrees) of scenes added before arc_ramp_start
    arc_end_deg: float = 60.0  # ... and after arc_ramp_end; linear in between (a curriculum)
    arc_ramp_start: int = 0
    arc_ramp_end: int = 1
    lr: float = 3e-4
    warmup_steps: int = 200
    decay_fraction: float = 0.25
    min_lr_ratio: float = 0.02
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    camera_weight: float = 5.0
    seed: int = 0
    out_dir: str = "runs/tiny"
    checkpoint_every: int = 50
    snapshot_every: int = 250
    log_every: int = 10
    threads: int = 2

    def __post_init__(self):
        if not 2 <= self.min_frames <= self.max_frames <= RENDERED_FRAMES:
            raise ValueError(f"need 2 <= min_frames <= max_frames <= {RENDERED_FRAMES} (pose needs two views)")
        if self.frames_per_step < self.max_frames:
            raise ValueError("frames_per_step must be at least max_frames")
        if self.bank_prefill < 1 or self.bank_size < self.bank_prefill:
            raise ValueError("need 1 <= bank_prefill <= bank_size")


def frames_for_step(cfg: TrainConfig, step: int) -> tuple[int, int]:
    """(B scenes, S frames) for a step; a pure function of (seed, step)."""
    rng = np.random.default_rng([cfg.seed, step])
    S = int(rng.integers(cfg.min_frames, cfg.max_frames + 1))
    return cfg.frames_per_step // S, S


def scenes_available(cfg: TrainConfig, step: int) -> range:
    """Scene indices (of the train split) in the bank when ``step`` is drawn."""
    end = cfg.bank_prefill + cfg.new_scenes_per_step * (step + 1)
    return range(max(0, end - cfg.bank_size), end)


def scene_arc_deg(cfg: TrainConfig, index: int) -> float:
    """Camera arc of bank scene ``index``, from the step at which it joined the bank.

    Small arcs (large overlap between views) make the first cross-frame correspondences
    easier to learn; the arc then widens to the evaluation distribution.
    """
    step = (index - cfg.bank_prefill) // cfg.new_scenes_per_step
    t = (step - cfg.arc_ramp_start) / max(1, cfg.arc_ramp_end - cfg.arc_ramp_start)
    return cfg.arc_start_deg + (cfg.arc_end_deg - cfg.arc_start_deg) * min(1.0, max(0.0, t))


class RenderedBatches(IterableDataset):
    """Yields (step, batch) for steps start, start+1, ... (runs in a worker process)."""

    def __init__(self, cfg: TrainConfig, start_step: int):
        self.cfg, self.start_step = cfg, start_step

    def _render(self, index: int) -> dict:
        scene = render_split("train", index, num_frames=RENDERED_FRAMES, image_size=self.cfg.image_size,
                             max_azimuth_deg=scene_arc_deg(self.cfg, index))
        return {k: torch.from_numpy(scene[k]) for k in ("images", "depth", "extrinsics", "intrinsics",
                                                        "world_points", "valid")}

    def __iter__(self):
        torch.set_num_threads(1)
        cfg, bank = self.cfg, {}
        for step in range(self.start_step, cfg.steps):
            available = scenes_available(cfg, step)
            for index in list(bank):
                if index not in available:
                    del bank[index]
            for index in available:
                if index not in bank:
                    bank[index] = self._render(index)
            B, S = frames_for_step(cfg, step)
            rng = np.random.default_rng([cfg.seed, step, 1])
            chosen = rng.choice(np.array(available), size=B, replace=False)
            frames = [torch.from_numpy(rng.permutation(RENDERED_FRAMES)[:S]) for _ in chosen]
            yield step, {key: torch.stack([bank[i][key][f] for i, f in zip(chosen, frames)])
                         for key in bank[chosen[0]]}


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Warm-up, stable, decay: linear warm-up, constant lr, cosine decay over the last ``decay_fraction``.

    The constant phase makes a run's length negotiable: ``steps`` can be changed when
    resuming, as long as the decay has not started.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    decay_start = int(cfg.steps * (1 - cfg.decay_fraction))
    if step < decay_start:
        return cfg.lr
    progress = min(1.0, (step - decay_start) / max(1, cfg.steps - decay_start))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def build_model(cfg: TrainConfig) -> torch.nn.Module:
    """The untrained model of a run: preset ``cfg.model``, seeded, with the LayerScale init override."""
    overrides = {} if cfg.init_values is None else {"init_values": cfg.init_values}
    return build_vggt(cfg.model, seed=cfg.seed, **overrides)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases, norms, LayerScale gammas, tokens and pos-embeds (ndim < 2 or tokens)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_token = name.endswith(("token", "tokens", "pos_embed"))
        (no_decay if p.ndim < 2 or is_token else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def train_step(model, optimizer, batch: dict, cfg: TrainConfig, step: int, bf16: bool = False,
               check_finite: bool = True):
    """One AdamW step at ``step``'s learning rate (bf16 autocast for the aggregator if asked; the
    heads run in fp32 anyway); returns (loss, lr, clipped gradient norm, loss parts), tensors
    left on the device. ``check_finite=False`` skips the per-step non-finite-loss check, a host
    sync that stalls a GPU; the caller then checks the loss when it logs."""
    lr = learning_rate(cfg, step)
    for group in optimizer.param_groups:
        group["lr"] = lr
    with torch.autocast(batch["images"].device.type, dtype=torch.bfloat16, enabled=bf16):
        predictions = model(batch["images"])
    loss, parts = vggt_loss(predictions, batch, cfg.camera_weight)
    if check_finite:
        raise_if_not_finite(loss, parts, step)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    return loss.detach(), lr, grad_norm, parts


def raise_if_not_finite(loss: torch.Tensor, parts: dict[str, torch.Tensor], step: int) -> None:
    if not torch.isfinite(loss):
        parts = {k: float(v) for k, v in parts.items()}
        raise FloatingPointError(f"non-finite loss at step {step}: {parts}; lower --lr or resume from a checkpoint")


def train(cfg: TrainConfig, resume: bool = True) -> Path:
    """Run (or resume) training; returns the path of the final safetensors checkpoint."""
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    (out / "snapshots").mkdir(parents=True, exist_ok=True)
    model = build_model(cfg)
    optimizer = make_optimizer(model, cfg)
    start_step = 0
    last = out / "last.pt"
    if resume and last.is_file():
        state = torch.load(last, map_location="cpu", weights_only=False)
        changed = sorted(k for k, v in dataclasses.asdict(cfg).items() if state["train_config"].get(k) != v)
        if changed:
            print(f"warning: resuming with a changed training configuration: {', '.join(changed)}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_step = state["step"]
    (out / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    model.train()
    loader = DataLoader(RenderedBatches(cfg, start_step), batch_size=None, num_workers=1, prefetch_factor=2)
    log = (out / "log.jsonl").open("a")
    tic = time.time()
    bar = tqdm(loader, total=cfg.steps, initial=start_step, desc="train", mininterval=5)
    for step, batch in bar:
        loss, lr, grad_norm, parts = train_step(model, optimizer, batch, cfg, step)
        done = step + 1
        if done % cfg.log_every == 0:
            record = {"step": done, "loss": float(loss), "lr": lr, "grad_norm": float(grad_norm),
                      "frames": int(batch["images"].shape[1]), "elapsed_s": round(time.time() - tic, 1),
                      **{k: float(v) for k, v in parts.items()}}
            log.write(json.dumps(record) + "\n")
            log.flush()
            bar.set_postfix(loss=f"{float(loss):.3f}", cam=f"{float(parts['camera']):.3f}")
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": done,
                        "train_config": dataclasses.asdict(cfg)}, out / "last.tmp")
            (out / "last.tmp").replace(last)
        if done % cfg.snapshot_every == 0:
            save_checkpoint(model, out / "snapshots" / f"step_{done:06d}.safetensors", {"step": str(done)})
    log.close()
    model.eval()
    return save_checkpoint(model, out / "final.safetensors", {"steps": str(cfg.steps)})
