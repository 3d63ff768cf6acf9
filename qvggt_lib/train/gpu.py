"""The GPU trainer (the recipe of the shipped tiny model): a ring bank of rendered scenes on the device.

Same losses, optimizer and warm-up/stable/decay schedule as :func:`qvggt_lib.train.trainer.train`
(the CPU trainer), but the data pipeline is made for a fast device: a pool of CPU workers
renders training scenes (``render_split("train", i)``, 8 frames each) into a ring bank that
lives on the GPU; each step draws B scenes from the bank and S of their 8 frames (S uniform
in [2, 8], B = frames_per_step // S), all on the device. Rendering keeps going in the
background, so later steps see newer scenes. The model runs under bf16 autocast on CUDA
(float32 on CPU).

With a ``minutes`` budget the number of steps is set from the measured speed every
``calibration_steps`` steps until the learning-rate decay starts (the first
``calibration_steps`` steps, with their warm-up kernels, are not timed), so that the run,
decay included, fits the budget; the chosen number is logged, and passing it as ``steps``
repeats the schedule. GPU kernels and the background renderer are not bit-for-bit
deterministic across runs.

Outputs in ``out``: ``log.jsonl`` (loss parts, lr, bank size, elapsed time), the weights as
``weights_0.safetensors`` + ``weights_1.safetensors`` (two halves of the state dict, each
under 16 MB; :func:`load_halves` joins them, :func:`join_halves` writes one checkpoint),
rewritten every ``save_every`` seconds, ``run.json`` and ``eval.json``
(:func:`qvggt_lib.eval.evaluate.evaluate` on the test split) at the end.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from qvggt_lib.data import render_split
from qvggt_lib.eval.evaluate import evaluate
from qvggt_lib.model import VGGT, VGGTConfig, save_checkpoint
from qvggt_lib.train.trainer import (
    RENDERED_FRAMES,
    TrainConfig,
    build_model,
    make_optimizer,
    raise_if_not_finite,
    train_step,
)

BANK_KEYS = ("images", "depth", "extrinsics", "intrinsics", "world_points", "valid")
BANK_DTYPES = {"images": torch.float16, "valid": torch.bool}  # the rest stays float32


def render_train_scene(index: int, image_size: int = 112) -> dict[str, np.ndarray]:
    """One bank scene: train-split scene ``index`` with 8 frames (images in float16)."""
    scene = render_split("train", index, num_frames=RENDERED_FRAMES, image_size=image_size)
    scene = {k: scene[k] for k in BANK_KEYS}
    scene["images"] = scene["images"].astype(np.float16)
    return scene


def _init_worker():
    torch.set_num_threads(1)


class SceneBank:
    """A ring buffer of rendered scenes on ``device``: slot i holds one scene's 8 frames."""

    def __init__(self, capacity: int, image_size: int, device):
        H = W = image_size
        shapes = {"images": (3, H, W), "depth": (H, W), "extrinsics": (3, 4), "intrinsics": (3, 3),
                  "world_points": (H, W, 3), "valid": (H, W)}
        self.tensors = {k: torch.empty((capacity, RENDERED_FRAMES, *shapes[k]), device=device,
                                       dtype=BANK_DTYPES.get(k, torch.float32)) for k in BANK_KEYS}
        self.capacity, self.size, self.next_slot, self.added = capacity, 0, 0, 0

    @staticmethod
    def bytes_per_scene(image_size: int) -> int:
        px = RENDERED_FRAMES * image_size * image_size
        return px * (3 * 2 + 4 + 3 * 4 + 1) + RENDERED_FRAMES * 21 * 4

    def add(self, scenes: list[dict[str, np.ndarray]]) -> None:
        """Write scenes into the next slots (oldest overwritten), one host-to-device copy per key."""
        if not scenes:
            return
        self.added += len(scenes)
        scenes = scenes[-self.capacity:]
        slots = (self.next_slot + torch.arange(len(scenes))) % self.capacity
        device = self.tensors["images"].device
        for k in BANK_KEYS:
            stacked = torch.from_numpy(np.stack([scene[k] for scene in scenes]))
            self.tensors[k][slots.to(device)] = stacked.to(device, dtype=self.tensors[k].dtype)
        self.next_slot = int(slots[-1] + 1) % self.capacity
        self.size = min(self.size + len(scenes), self.capacity)

    def sample(self, num_scenes: int, num_frames: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """[B, S, ...] batch: B distinct slots, S distinct frames of each in random order."""
        device = self.tensors["images"].device
        slots = torch.randperm(self.size, generator=generator, device="cpu")[:num_scenes]
        frames = torch.argsort(torch.rand(num_scenes, RENDERED_FRAMES, generator=generator), dim=1)[:, :num_frames]
        slots, frames = slots.to(device), frames.to(device)
        batch = {k: v[slots[:, None], frames] for k, v in self.tensors.items()}
        batch["images"] = batch["images"].float()
        return batch


def save_halves(model: torch.nn.Module, out: Path, metadata: dict[str, str]) -> None:
    """State dict in two safetensors files (the device tool returns files of at most 16 MB)."""
    state = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    keys = list(state)
    half = len(keys) // 2
    for i, part in enumerate((keys[:half], keys[half:])):
        tmp = out / f"weights_{i}.tmp"
        save_file({k: state[k] for k in part}, str(tmp), metadata=metadata)
        tmp.replace(out / f"weights_{i}.safetensors")


def load_halves(folder: str | Path) -> dict[str, torch.Tensor]:
    """The state dict written by :func:`save_halves`."""
    folder = Path(folder)
    return {**load_file(str(folder / "weights_0.safetensors")), **load_file(str(folder / "weights_1.safetensors"))}


def join_halves(folder: str | Path, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """One checkpoint (``save_checkpoint`` format, loadable with ``load_model``) from a run's halves.

        python scripts/train_gpu.py --join runs/gpu/train_main data/checkpoints/vggt-tiny.safetensors
    """
    with safe_open(str(Path(folder) / "weights_0.safetensors"), "pt") as f:
        saved = f.metadata() or {}
    if "config" not in saved:
        raise ValueError(f"{folder}: the weight halves carry no model configuration (written before it was stored); "
                         "build the model with its config and load_state_dict(load_halves(folder)) yourself")
    model = VGGT(VGGTConfig.from_dict(json.loads(saved["config"])))
    model.load_state_dict(load_halves(folder))
    extra = {k: v for k, v in saved.items() if k != "config"}
    return save_checkpoint(model.eval(), path, {**extra, **(metadata or {})})


def take_ready(pending, limit: int) -> list[dict[str, np.ndarray]]:
    """The scenes the render pool has finished (in order), without waiting for more."""
    scenes = []
    while len(scenes) < limit:
        try:
            scenes.append(pending.next(timeout=0))
        except mp.TimeoutError:
            break
    return scenes


@dataclass(frozen=True)
class DeviceTrainSettings:
    """One GPU training run; exactly one of ``minutes`` (wall-clock budget) and ``steps``."""

    out: str
    minutes: float | None = None
    steps: int | None = None
    device: str = "cuda"
    frames_per_step: int = 128
    lr: float = 4e-4
    init_values: float | None = None  # LayerScale init (None: the model config's 0.01)
    init_from: str | None = None  # folder with an earlier run's weight halves to start from
    warmup_steps: int = 300
    camera_weight: float = 10.0
    seed: int = 0
    workers: int = 6  # render workers during training
    prefill_workers: int = max(1, (os.cpu_count() or 2) - 8)
    prefill: int = 3000  # scenes rendered before the first step
    bank: int = 24000  # most scenes kept on the device
    calibration_steps: int = 60
    save_every: float = 60.0  # seconds between weight saves
    eval_scenes: int = 32

    def __post_init__(self):
        if (self.minutes is None) == (self.steps is None):
            raise ValueError("give exactly one of minutes (a wall-clock budget) and steps (a fixed length)")


def train_on_device(settings: DeviceTrainSettings) -> dict:
    """Train, save the weight halves and evaluate; returns the test-split metrics."""
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(settings.device)
    cuda = device.type == "cuda"
    torch.manual_seed(settings.seed)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cfg = TrainConfig(steps=settings.steps or 10**9, init_values=settings.init_values,
                      frames_per_step=settings.frames_per_step, lr=settings.lr,
                      warmup_steps=settings.warmup_steps, camera_weight=settings.camera_weight, seed=settings.seed,
                      out_dir=str(out))
    # Two spawn pools (workers must not inherit a CUDA context): a large one renders the first
    # --prefill scenes and closes; a small one keeps rendering new scenes during training, at a
    # rate the main process can absorb between steps.
    spawn = mp.get_context("spawn")
    background = spawn.Pool(settings.workers, initializer=_init_worker)
    pending = background.imap(render_train_scene, range(settings.prefill, 10**9))  # chunksize 1: an IMapIterator with .next(timeout)
    capacity = settings.bank
    if cuda:
        free, _ = torch.cuda.mem_get_info()
        capacity = min(capacity, int(0.6 * free) // SceneBank.bytes_per_scene(cfg.image_size))
    bank = SceneBank(capacity, cfg.image_size, device)
    tic = time.time()
    with spawn.Pool(settings.prefill_workers, initializer=_init_worker) as prefill:
        for start in range(0, min(settings.prefill, capacity), 256):
            indices = range(start, min(start + 256, settings.prefill, capacity))
            bank.add(prefill.map(render_train_scene, indices, chunksize=4))
    print(f"bank: {bank.size} scenes prefilled in {time.time() - tic:.1f} s with "
          f"{settings.prefill_workers} + {settings.workers} workers (capacity {capacity})", flush=True)

    model = build_model(cfg)
    if settings.init_from:
        model.load_state_dict(load_halves(settings.init_from))
    model = model.to(device).train()
    optimizer = make_optimizer(model, cfg)
    generator = torch.Generator().manual_seed(settings.seed)
    log = (out / "log.jsonl").open("w")
    start = last_save = time.time()
    step, timer = 0, None  # timer: (step, time) where the timed window starts
    while step < cfg.steps:
        before_decay = step < cfg.steps * (1 - cfg.decay_fraction)
        if settings.minutes is not None and step % settings.calibration_steps == 0 and before_decay:
            now = time.time()
            if timer is not None:
                per_step = (now - timer[1]) / (step - timer[0])
                total = step + int((settings.minutes * 60 - (now - start)) / per_step)
                cfg = dataclasses.replace(cfg, steps=max(total, step + 1))
                print(f"step {step}: {per_step * 1e3:.1f} ms/step -> {cfg.steps} steps in {settings.minutes} min",
                      flush=True)
            if step > 0:
                timer = (step, now)
        rng = np.random.default_rng([cfg.seed, step])
        S = int(rng.integers(cfg.min_frames, cfg.max_frames + 1))
        batch = bank.sample(cfg.frames_per_step // S, S, generator)
        loss, lr, grad_norm, parts = train_step(model, optimizer, batch, cfg, step, bf16=cuda, check_finite=False)
        step += 1
        if step % 20 == 0:
            raise_if_not_finite(loss, parts, step)
            bank.add(take_ready(pending, limit=4 * capacity))
            record = {"step": step, "loss": float(loss), "lr": lr, "grad_norm": float(grad_norm), "frames": S,
                      "bank": bank.size, "rendered": bank.added, "elapsed_s": round(time.time() - start, 1),
                      **{k: float(v) for k, v in parts.items()}}
            log.write(json.dumps(record) + "\n")
            log.flush()
            if step % 200 == 0:
                print(json.dumps(record), flush=True)
        if time.time() - last_save > settings.save_every or step == cfg.steps:
            save_halves(model, out, {"step": str(step), "steps": str(cfg.steps),
                                     "config": json.dumps(model.config.to_dict())})
            last_save = time.time()
    background.terminate()
    train_s = time.time() - start
    (out / "run.json").write_text(json.dumps({
        "steps": cfg.steps, "train_seconds": round(train_s, 1), "scenes_rendered": bank.added,
        "device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
        "settings": dataclasses.asdict(settings), "train_config": dataclasses.asdict(cfg)}, indent=2))
    model.eval()
    metrics = evaluate(model, num_scenes=settings.eval_scenes, num_frames=8, seed=0, progress=False)
    (out / "eval.json").write_text(json.dumps(metrics, indent=2))
    print(f"trained {cfg.steps} steps in {train_s / 60:.1f} min; test AUC@30 {metrics['auc30']:.1f}, "
          f"AbsRel {metrics['depth_abs_rel']:.3f}", flush=True)
    return metrics
