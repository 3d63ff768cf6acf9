"""Calibration: scenes in, layer statistics and block reconstruction out (QuantVGGT Sec. 3.2-3.3).

Three tools, all driven by a list of calibration scenes (tensors [S, 3, H, W] in [0, 1]):

* ``collect_linear_statistics``: forward hooks on target linears give, over every token of every
  scene, the per-channel max|x| (and max|x R| in a layer's rotated space) for smoothing, and the
  GPTQ Hessian H = 2/n sum_t x_t x_t^T (of x R when the layer rotates).
* ``calibrate_blockwise``: BRECQ/QDrop-style block reconstruction. For each quantized block in
  execution order (frame 0, global 0, frame 1, ...), with X its input and F the FP block,

      min over (s, clip logits) of  E_scenes || Q_block(X) - F(X) ||^2

  by AdamW (weight decay 0, lr 5e-3 for s and 5e-2 for the clip logits), a cosine schedule down
  to lr * 1e-3, one scene per step, fp32. X is captured from the real forward, so a frame block
  sees [S, P, C] and a global block [1, S*P, C] (the reference code feeds global blocks the
  frame layout, i.e. fits them without cross-frame attention: section 8 of the method notes).
* ``calibration_scenes``: the NFDS (or random / filtered / clustered) pick from the calib split.

Inputs to block i come from the FP model by default, as in the reference code (inputs and
targets both from the FP chain, so the blocks can be fitted independently); ``input_from=
"quantized"`` feeds the output of the already-quantized blocks instead (BRECQ/QDrop), with
targets still from the FP chain.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from .gptq import HessianAccumulator
from .hadamard import RandomHadamard
from .linear import QuantLinear
from .targets import SCOPES, block_chains, quantizable_linears

INPUT_FROM = ("fp", "quantized")


class _StopForward(Exception):
    """Raised by a hook once everything needed from this forward has been seen."""


def check_calibration(calibration, model) -> list[Tensor]:
    """Calibration scenes as float tensors [S, 3, H, W] on the model's device, or ValueError."""
    if calibration is None:
        raise ValueError("this method needs calibration data: a list of scenes [S, 3, H, W]")
    if isinstance(calibration, Tensor):
        if calibration.dim() != 5:
            raise ValueError(
                f"calibration as one tensor must be [N, S, 3, H, W], got {tuple(calibration.shape)}"
            )
        calibration = list(calibration)
    calibration = list(calibration)
    if not calibration:
        raise ValueError("calibration is empty: give at least one scene [S, 3, H, W]")
    device = _model_device(model)
    scenes = []
    for i, scene in enumerate(calibration):
        scene = torch.as_tensor(scene)
        if scene.dim() != 4:
            raise ValueError(
                f"calibration scene {i} must be one scene [S, 3, H, W], got {tuple(scene.shape)}"
            )
        try:
            model.check_images(scene)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"calibration scene {i}: {exc}") from exc
        scenes.append(scene.to(device=device, dtype=torch.float32))
    return scenes


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _run(model: nn.Module, scene: Tensor, runs_in: str) -> None:
    """The smallest forward that reaches the blocks of a scope: aggregator (+ camera head)."""
    tokens, _ = model.aggregator(scene[None])
    if runs_in == "camera_head":
        model.camera_head([tokens[-1].float()])


def _runs_in(names) -> str:
    camera_path = SCOPES["camera_head"].path
    return "camera_head" if any(n.startswith(camera_path + ".") for n in names) else "aggregator"


class _EvalMode:
    """Context: model in eval mode and no autograd; every submodule's mode restored after."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.grad = torch.no_grad()
        self.grad.__enter__()
        self.model.eval()

    def __exit__(self, *exc):
        for module, mode in self.modes:
            module.training = mode  # not .train(): that would refresh QuantLinear caches
        self.grad.__exit__(*exc)


# ----------------------------------------------------------------------------- statistics


@dataclass
class LinearStatistics:
    """What calibration saw at one linear's input x [..., K]."""

    act_absmax: Tensor  # [K] max over all tokens of |x|
    rotated_absmax: Tensor | None  # [K] max |x R|, when a rotation was given
    hessian: Tensor | None  # [K, K] 2/n sum x x^T of x R (rotation given) or x; if need_hessian
    num_tokens: int


class _LinearObserver:
    """Context: forward pre-hooks on the linears ``names`` of model that accumulate statistics.

    With ``stop_at`` (a name), the hook of that layer raises _StopForward once it has recorded.
    """

    def __init__(self, model, names, rotations=None, need_hessian=False, stop_at=None):
        self.modules = {name: model.get_submodule(name) for name in names}
        self.rotations = rotations or {}
        self.need_hessian, self.stop_at = need_hessian, stop_at
        self.absmax: dict[str, Tensor] = {}
        self.rotated: dict[str, Tensor] = {}
        self.hessians = {name: HessianAccumulator() for name in names} if need_hessian else {}
        self.tokens = dict.fromkeys(names, 0)

    @staticmethod
    def _running_max(store, name, x):
        m = x.abs().reshape(-1, x.shape[-1]).amax(dim=0)
        store[name] = m if name not in store else torch.maximum(store[name], m)

    def _hook(self, name):
        def hook(module, args):
            x = args[0].detach().float()
            self.tokens[name] += x.numel() // x.shape[-1]
            self._running_max(self.absmax, name, x)
            if name in self.rotations:
                x = self.rotations[name].to(x.device).rotate(x)
                self._running_max(self.rotated, name, x)
            if self.need_hessian:
                self.hessians[name].update(x)
            if name == self.stop_at:
                raise _StopForward

        return hook

    def __enter__(self):
        self.handles = [m.register_forward_pre_hook(self._hook(n)) for n, m in self.modules.items()]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()

    def results(self) -> dict[str, LinearStatistics]:
        missing = [name for name, n in self.tokens.items() if n == 0]
        if missing:
            raise RuntimeError(f"the calibration forward never reached {missing}")
        return {
            name: LinearStatistics(
                act_absmax=self.absmax[name],
                rotated_absmax=self.rotated.get(name),
                hessian=self.hessians[name].hessian if self.need_hessian else None,
                num_tokens=self.tokens[name],
            )
            for name in self.modules
        }


def collect_linear_statistics(
    model: nn.Module,
    calibration,
    names,
    rotations: dict[str, RandomHadamard] | None = None,
    need_hessian: bool = False,
    progress: bool = True,
) -> dict[str, LinearStatistics]:
    """Hook the linears ``names`` of ``model`` and run every calibration scene through it.

    Args:
        model: a VGGT; put in eval mode for the pass (restored afterwards), never modified.
        calibration: list of scenes [S, 3, H, W] in [0, 1].
        names: module names of the linears (targets.quantizable_linears keys).
        rotations: {name: RandomHadamard} for layers that rotate their input; their
            rotated_absmax and Hessian are taken of x R. (A smoothing s that follows the
            rotation changes the Hessian to H / (s s^T); no config here needs that.)
        need_hessian: also accumulate the GPTQ Hessians (K x K each).
    Returns:
        {name: LinearStatistics}. The forward stops as soon as the last hooked aggregator layer
        has run; camera-head layers need the whole camera head (it calls its trunk 4 times).
    """
    names = list(names)
    scenes = check_calibration(calibration, model)
    runs_in = _runs_in(names)
    order = {name: i for i, name in enumerate(quantizable_linears(model, _present_scopes(model)))}
    stop_at = None
    if runs_in == "aggregator" and all(n in order for n in names):
        stop_at = max(names, key=order.get)  # nothing after the last hooked layer is needed
    observer = _LinearObserver(model, names, rotations, need_hessian, stop_at)
    with observer, _EvalMode(model):
        for scene in tqdm(scenes, desc="statistics", unit="scene", disable=not progress):
            try:
                _run(model, scene, runs_in)
            except _StopForward:
                pass
    return observer.results()


def block_linear_statistics(
    block: nn.Module,
    inputs: list[tuple],
    names,
    rotations: dict[str, RandomHadamard] | None = None,
    need_hessian: bool = False,
) -> dict[str, LinearStatistics]:
    """As collect_linear_statistics, for linears of one block (names relative to the block,
    e.g. "attn.qkv") fed with cached block inputs (BlockInputs.args)."""
    with _LinearObserver(block, names, rotations, need_hessian) as observer, _EvalMode(block):
        for args in inputs:
            block(*args)
    return observer.results()


# ----------------------------------------------------------------------------- block inputs


def capture_block_inputs(model: nn.Module, names, scenes, runs_in: str) -> dict[str, list[tuple]]:
    """{block name: the positional arguments of its every call} while ``scenes`` run through model.

    names: block names in execution order. Aggregator blocks are called once per scene (the
    forward stops after the last of ``names``); camera trunk blocks four times (one per
    refinement iteration). Arguments are e.g. (tokens [S, P, C], pos [S, P, 2]) for a frame
    block and (tokens [1, S*P, C], pos [1, S*P, 2]) for a global block.
    """
    names = list(names)
    calls: dict[str, list[tuple]] = {name: [] for name in names}

    def make_hook(name):
        def hook(module, args):
            calls[name].append(tuple(a.detach() if torch.is_tensor(a) else a for a in args))
            if runs_in == "aggregator" and name == names[-1]:
                raise _StopForward

        return hook

    handles = [model.get_submodule(n).register_forward_pre_hook(make_hook(n)) for n in names]
    try:
        with _EvalMode(model):
            for scene in scenes:
                try:
                    _run(model, scene, runs_in)
                except _StopForward:
                    pass
    finally:
        for handle in handles:
            handle.remove()
    return calls


class BlockInputs:
    """The inputs of one chain's blocks (targets.CHAINS), one block at a time, for every call.

    It captures the first block of each scope of the chain from real forwards of ``model`` (one
    call per scene in the aggregator, four for the camera trunk), then ``advance(outputs)`` turns
    the current block's outputs into the next block's inputs: the same tokens reshaped to the
    next block's layout (frame [S, P, C] <-> global [1, S*P, C]) with that block's other
    arguments (its RoPE positions). So a chain of n blocks costs one (early-stopped) model
    forward per scene plus n block forwards, not n model forwards.
    """

    def __init__(self, model: nn.Module, chain: list, scenes):
        self.chain = chain
        firsts: dict[str, str] = {}
        for name, scope, _ in chain:
            firsts.setdefault(scope.name, name)
        captured = capture_block_inputs(model, list(firsts.values()), scenes, chain[0][1].runs_in)
        self.templates = {scope: captured[name] for scope, name in firsts.items()}
        self.position = 0
        self.args = self.templates[chain[0][1].name]

    @property
    def name(self) -> str:
        return self.chain[self.position][0]

    def advance(self, outputs: list[Tensor]) -> None:
        """outputs: the current block's output for every call, in the order of self.args."""
        self.position += 1
        if self.position == len(self.chain):
            self.args = []
            return
        templates = self.templates[self.chain[self.position][1].name]
        self.args = [(out.reshape(t[0].shape), *t[1:]) for out, t in zip(outputs, templates)]


def run_block(block: nn.Module, inputs: list[tuple]) -> list[Tensor]:
    """block(*args) for every args, in eval mode, without autograd."""
    with _EvalMode(block):
        return [block(*args) for args in inputs]


# ----------------------------------------------------------------------------- block reconstruction


@dataclass
class BlockCalibration:
    """What block reconstruction did to one block."""

    name: str
    num_samples: int
    steps: int
    seconds: float  # all of this block: targets, MSEs and training
    train_seconds: float  # the optimisation steps alone
    mse_before: float  # mean over samples of the block output MSE, eval mode, before training
    mse_after: float  # ... after training, or mse_before when training made it worse (restored)
    restored: bool = False  # training raised the MSE, so the initial s and clips were kept


def _learnable(block: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(smoothing vectors, clip logits) of the QuantLinears in block."""
    smooth, clips = [], []
    for module in block.modules():
        if isinstance(module, QuantLinear):
            if module.smooth is not None:
                smooth.append(module.smooth)
            for quantizer in (module.weight_quantizer, module.act_quantizer):
                if quantizer is not None and quantizer.clip is not None:
                    clips.append(quantizer.clip.logit)
    return smooth, clips


@torch.no_grad()
def restore_parameters(block: nn.Module, values: list[Tensor]) -> None:
    """Put back the smoothing vectors and clip logits saved before calibrate_block (same order
    as _learnable) and recompute the cached quantized weights."""
    smooth, clips = _learnable(block)
    for param, value in zip(smooth + clips, values):
        param.copy_(value)
    for module in block.modules():
        if isinstance(module, QuantLinear):
            module.refresh()


def _mse(outputs: list[Tensor], targets: list[Tensor]) -> float:
    return sum(F.mse_loss(o, t).item() for o, t in zip(outputs, targets)) / len(targets)


def _cosine(step: int, total: int, floor: float = 1e-3) -> float:
    """lr factor: cosine from 1 at step 0 to ``floor`` at step ``total`` (eta_min = lr * floor)."""
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


def calibrate_block(
    block: nn.Module,
    inputs: list[tuple],
    targets: list[Tensor],
    epochs: int,
    lr_smooth: float = 5e-3,
    lr_clip: float = 5e-2,
    seed: int = 0,
) -> int:
    """Train the smoothing vectors and clip logits of ``block`` (in place); returns the steps taken.

    One sample (argument tuple) per step, order reshuffled every epoch with a seeded generator.
    Every other parameter of the block is frozen during training and restored afterwards.
    The block ends in eval mode (QuantLinear caches its quantized weights).
    """
    smooth, clips = _learnable(block)
    if not smooth and not clips or epochs == 0 or not inputs:
        block.eval()
        return 0
    learnable = {id(p) for p in smooth + clips}
    flags = [(p, p.requires_grad) for p in block.parameters()]
    groups = [g for g in ({"params": smooth, "lr": lr_smooth}, {"params": clips, "lr": lr_clip})
              if g["params"]]
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    total = epochs * len(inputs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _cosine(step, total))
    generator = torch.Generator().manual_seed(seed)
    try:
        for p, _ in flags:
            p.requires_grad_(id(p) in learnable)
        block.train()
        with torch.enable_grad():
            for _ in range(epochs):
                for i in torch.randperm(len(inputs), generator=generator).tolist():
                    loss = F.mse_loss(block(*inputs[i]), targets[i])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        block.eval()
    return total


def run_fingerprint(q_model: nn.Module, scenes: list[Tensor], settings: dict) -> str:
    """SHA-256 of everything a block calibration depends on: the settings, the calibration
    scenes and the quantized model's state before calibration (weights, rotations, initial s)."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    tensors = [("scene", scene) for scene in scenes] + list(q_model.state_dict().items())
    for name, tensor in tensors:
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class CalibrationProgress:
    """A side file that lets an interrupted block calibration resume where it stopped.

    After each block it holds that block's learned smoothing vectors and clip logits, and the
    BlockCalibration records so far, under the run's fingerprint (``run_fingerprint``); it is
    rewritten atomically, so an interruption at any moment leaves the last finished block.
    """

    def __init__(self, path, fingerprint: str):
        self.path, self.fingerprint = Path(path), fingerprint
        self.values: dict[str, list[Tensor]] = {}  # block name -> learned s and clip logits
        self.records: dict[str, BlockCalibration] = {}
        if self.path.exists():
            with safe_open(str(self.path), framework="pt") as f:
                metadata = f.metadata() or {}
                if metadata.get("fingerprint") != fingerprint:
                    raise ValueError(
                        f"calibration progress file {self.path} belongs to another run (other model, "
                        "calibration scenes or settings); delete it to start over, or resume with the "
                        "same inputs")
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
            self.records = {r["name"]: BlockCalibration(**r) for r in json.loads(metadata["records"])}
            for name in self.records:
                count = sum(k.startswith(name + "/") for k in tensors)
                self.values[name] = [tensors[f"{name}/{i}"] for i in range(count)]

    def save(self, name: str, values: list[Tensor], record: BlockCalibration) -> None:
        self.values[name] = [v.detach().cpu().clone() for v in values]
        self.records[name] = record
        tensors = {f"{block}/{i}": v for block, vs in self.values.items() for i, v in enumerate(vs)}
        metadata = {"fingerprint": self.fingerprint,
                    "records": json.dumps([asdict(r) for r in self.records.values()])}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".tmp")
        save_file(tensors, str(partial), metadata=metadata)
        os.replace(partial, self.path)  # atomic: the old file or the new one, never half of one


def calibrate_blockwise(
    fp_model: nn.Module,
    q_model: nn.Module,
    calibration,
    epochs: int = 3,
    lr_smooth: float = 5e-3,
    lr_clip: float = 5e-2,
    input_from: str = "fp",
    seed: int = 0,
    progress: bool = True,
    resume_file=None,
) -> list[BlockCalibration]:
    """Block-wise reconstruction of every quantized block of ``q_model`` (in place).

    Args:
        fp_model: the float model ``q_model`` was made from (read only).
        q_model: same architecture with QuantLinear layers; blocks holding at least one are
            calibrated, in execution order (targets.target_blocks).
        calibration: list of scenes [S, 3, H, W]; one scene (one call, for the camera trunk)
            per optimisation step.
        epochs: passes over the calibration set per block (the paper: 15; api.DEFAULT_EPOCHS).
        lr_smooth, lr_clip: AdamW learning rates of s and of the clip logits (paper values).
        input_from: "fp" (reference code: block inputs from the FP model) or "quantized"
            (inputs from q_model, whose earlier blocks are already calibrated).
        seed: shuffling seed (each block adds its index).
        resume_file: optional path of a CalibrationProgress side file: blocks it already holds
            are restored instead of trained, and every newly calibrated block is added to it.
            The caller deletes it once the quantized model is saved.
    Returns:
        One BlockCalibration per calibrated block. q_model ends in eval mode.
    """
    if input_from not in INPUT_FROM:
        raise ValueError(f"input_from must be one of {INPUT_FROM}, got {input_from!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be an integer >= 0, got {epochs!r}")
    scenes = check_calibration(calibration, fp_model)
    q_model.eval()
    saved = None
    if resume_file is not None:
        settings = {"epochs": epochs, "lr_smooth": lr_smooth, "lr_clip": lr_clip, "input_from": input_from,
                    "seed": seed}
        saved = CalibrationProgress(resume_file, run_fingerprint(q_model, scenes, settings))
    chains = [c for c in block_chains(q_model, _present_scopes(q_model)) if any(map(_quantized, c))]
    bar = tqdm(total=sum(map(_quantized, (b for c in chains for b in c))), unit="block",
               desc="block calibration", disable=not progress)
    records = []
    for chain in chains:
        fp_inputs = BlockInputs(fp_model, chain, scenes)  # same names in both models
        q_inputs = BlockInputs(q_model, chain, scenes) if input_from == "quantized" else fp_inputs
        for name, _, q_block in chain:
            tic = time.perf_counter()
            targets = run_block(fp_model.get_submodule(name), fp_inputs.args)  # FP chain outputs
            if saved is not None and name in saved.values:  # calibrated before an interruption
                restore_parameters(q_block, saved.values[name])
                records.append(saved.records[name])
                bar.update()
            elif _quantized((name, None, q_block)):
                bar.set_postfix_str(name.split(".", 1)[-1])
                inputs = q_inputs.args
                before = _mse(run_block(q_block, inputs), targets)
                smooth, clips = _learnable(q_block)
                initial = [p.detach().clone() for p in smooth + clips]
                train_tic = time.perf_counter()
                steps = calibrate_block(q_block, inputs, targets, epochs, lr_smooth, lr_clip,
                                        seed + len(records))
                train_seconds = time.perf_counter() - train_tic
                after = _mse(run_block(q_block, inputs), targets) if steps else before
                restored = after > before  # a short or noisy run can end worse than it began
                if restored:
                    restore_parameters(q_block, initial)
                    after = before
                records.append(BlockCalibration(name, len(inputs), steps, time.perf_counter() - tic,
                                                train_seconds, before, after, restored))
                if saved is not None:
                    saved.save(name, [p.detach() for p in smooth + clips], records[-1])
                bar.update()
            if q_inputs is not fp_inputs:
                q_inputs.advance(run_block(q_block, q_inputs.args))
            fp_inputs.advance(targets)
    bar.close()
    return records


def _quantized(block_entry) -> bool:
    return any(isinstance(m, QuantLinear) for m in block_entry[2].modules())


def _present_scopes(model: nn.Module) -> tuple[str, ...]:
    """The scopes whose blocks exist in model (a VGGT without a camera head has no trunk)."""
    present = []
    for name, scope in SCOPES.items():
        try:
            model.get_submodule(scope.path)
            present.append(name)
        except AttributeError:
            pass
    return tuple(present)


# ----------------------------------------------------------------------------- calibration set


def calibration_scenes(
    model: nn.Module,
    method: str = "nfds",
    num_samples: int = 40,
    pool_size: int = 400,
    num_frames: int = 8,
    image_size: int | None = None,
    seed: int = 0,
    num_clusters: int = 8,
    drop_fraction: float = 0.2,
    pool: list[Tensor] | None = None,
    features: tuple | None = None,
    num_deep_blocks: int | None = None,
    progress: bool = False,
) -> list[Tensor]:
    """Pick ``num_samples`` calibration scenes from a pool of the calib split (sampling.py).

    pool: precomputed candidate_pool(...) scenes (else rendered: calib scenes 0..pool_size-1,
    num_frames each, at image_size or the model's img_size). features: precomputed
    (stats, frame features) of that pool from sampling.collect_candidate_features, so that
    several selections (seeds, methods) share one forward per candidate. num_deep_blocks: the
    last blocks whose statistics feed the noise filter (default min(4, depth), as the paper).
    """
    from .sampling import candidate_pool, collect_candidate_features, select_from_features

    if pool is None:
        size = image_size or model.config.img_size
        pool = candidate_pool(pool_size, num_frames=num_frames, image_size=size)
    if method != "random" and features is None:
        depth = len(model.aggregator.frame_blocks)
        deep = min(4, depth) if num_deep_blocks is None else num_deep_blocks
        features = collect_candidate_features(model, pool, deep, progress=progress)
    stats, frame_features = features if features is not None else (None, None)
    indices = select_from_features(stats, frame_features, num_samples, method, drop_fraction,
                                   num_clusters, seed, num_candidates=len(pool))
    return [pool[i] for i in indices]
