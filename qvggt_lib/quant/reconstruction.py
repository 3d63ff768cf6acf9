"""Block-wise reconstruction (QuantVGGT Sec. 3.2): learn s and the clip factors block by block.

For each quantized block in execution order (frame 0, global 0, frame 1, ...), with X its
input and F the float block (BRECQ / QDrop style),

    min over (s, clip logits) of  E_scenes || Q_block(X) - F(X) ||^2

by AdamW (weight decay 0, lr 5e-3 for s and 5e-2 for the clip logits), a cosine schedule down
to lr * 1e-3, one scene per step, fp32, gradients through round() by the straight-through
estimator (quantizer.round_ste). X is captured from the real forward, so a frame block sees
[S, P, C] and a global block [1, S*P, C] (the reference code feeds global blocks the frame
layout, i.e. fits them without cross-frame attention).

With ``weight_rounding="gptq"`` (QuantVGGTConfig), each block's weights are then rounded again by
GPTQ in the rotated-and-smoothed space: W' = (W R) * s with the learned s and weight clips, H the
Hessian of the block's transformed inputs (x R) / s (activations unquantized, as GPTQ and QuaRot
collect it), kept only where it lowers the block's output MSE on the calibration inputs.

Inputs to block i come from the output of the already-quantized blocks by default
(``input_from="quantized"``, BRECQ/QDrop), with targets from the FP chain, so each block also
learns to undo the error of the blocks before it; ``input_from="fp"`` takes the inputs from the
FP model, as the reference code does (then the blocks are fitted independently).
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

from .configs import QuantVGGTConfig
from .gptq import HessianAccumulator, gptq_quantize_weight
from .linear import QuantLinear
from .observers import EvalMode, StopForward, check_calibration, hooks, present_scopes, run_scenes
from .targets import block_chains

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

    def keep(name):
        def fn(args):
            calls[name].append(tuple(a.detach() if torch.is_tensor(a) else a for a in args))
            if runs_in == "aggregator" and name == names[-1]:
                raise StopForward

        return fn

    with hooks(model, {name: keep(name) for name in names}):
        run_scenes(model, scenes, runs_in)
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
    with EvalMode(block):
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
    mse_gptq: float | None = None  # weight_rounding="gptq": the block MSE with GPTQ weights
    gptq_kept: bool = False  # ... lower than mse_after, so the GPTQ weights were kept


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


@torch.no_grad()
def gptq_round_block(block: nn.Module, inputs: list[tuple], percdamp: float = 0.01,
                     block_size: int = 128) -> None:
    """Round the weights of every QuantLinear of ``block`` by GPTQ in its transformed space (in place).

    For each layer, W' = transformed_weight() (e.g. (W R) * s) is quantized by gptq_quantize_weight
    with the layer's weight spec and learned weight clip, and H = 2/n sum x' x'^T over the
    transformed inputs x' = transform_input(x) (e.g. (x R) / s) of every call in ``inputs``, all
    layers' Hessians from one pass with activations unquantized. The result replaces the cached
    quantized weight (QuantLinear.set_quantized_weight) until the next refresh().
    """
    layers = {name: m for name, m in block.named_modules()
              if isinstance(m, QuantLinear) and m.weight_quantizer is not None}
    hessians = {name: HessianAccumulator() for name in layers}

    def observe(name):
        return lambda args: hessians[name].update(layers[name].transform_input(args[0].float()))

    act_quantizers = {name: layer.act_quantizer for name, layer in layers.items()}
    try:
        for layer in layers.values():
            layer.act_quantizer = None
        with hooks(block, {name: observe(name) for name in layers}), EvalMode(block):
            for args in inputs:
                block(*args)
    finally:
        for name, layer in layers.items():
            layer.act_quantizer = act_quantizers[name]
    for name, layer in layers.items():
        quantizer = layer.weight_quantizer
        clip = None if quantizer.clip is None else quantizer.clip()
        layer.set_quantized_weight(gptq_quantize_weight(
            layer.transformed_weight(), hessians[name].hessian, quantizer.spec, percdamp,
            block_size, clip=clip))


def _round_with_gptq(block: nn.Module, inputs: list[tuple], targets: list[Tensor], mse_rtn: float,
                     percdamp: float) -> tuple[float, bool]:
    """gptq_round_block, kept only if it lowers the block output MSE: (that MSE, kept)."""
    gptq_round_block(block, inputs, percdamp)
    mse = _mse(run_block(block, inputs), targets)
    if mse >= mse_rtn:
        for module in block.modules():
            if isinstance(module, QuantLinear):
                module.refresh()  # back to RTN with the learned clips
    return mse, mse < mse_rtn


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
    config: QuantVGGTConfig,
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
        config: its epochs (passes over the calibration set per block), lr_smooth and lr_clip
            (AdamW learning rates of s and of the clip logits), input_from ("fp": block inputs
            from the FP model, as the reference code; "quantized": from q_model, whose earlier
            blocks are already calibrated) and seed (shuffling; each block adds its index).
        resume_file: optional path of a CalibrationProgress side file: blocks it already holds
            are restored instead of trained, and every newly calibrated block is added to it.
            The caller deletes it once the quantized model is saved.
    Returns:
        One BlockCalibration per calibrated block. q_model ends in eval mode.
    """
    scenes = check_calibration(calibration, fp_model)
    q_model.eval()
    saved = None
    settings = {"epochs": config.epochs, "lr_smooth": config.lr_smooth, "lr_clip": config.lr_clip,
                "input_from": config.input_from, "seed": config.seed}
    if config.weight_rounding != "rtn":  # (old progress files, made without the field, stay valid)
        settings |= {"weight_rounding": config.weight_rounding, "percdamp": config.percdamp}
    if resume_file is not None:
        saved = CalibrationProgress(resume_file, run_fingerprint(q_model, scenes, settings))
    chains = [c for c in block_chains(q_model, present_scopes(q_model)) if any(map(_quantized, c))]
    bar = tqdm(total=sum(map(_quantized, (b for c in chains for b in c))), unit="block",
               desc="block calibration", disable=not progress)
    records = []
    for chain in chains:
        fp_inputs = BlockInputs(fp_model, chain, scenes)  # same names in both models
        q_inputs = BlockInputs(q_model, chain, scenes) if config.input_from == "quantized" else fp_inputs
        for name, _, q_block in chain:
            tic = time.perf_counter()
            targets = run_block(fp_model.get_submodule(name), fp_inputs.args)  # FP chain outputs
            if saved is not None and name in saved.values:  # calibrated before an interruption
                restore_parameters(q_block, saved.values[name])
                records.append(saved.records[name])
                if records[-1].gptq_kept:  # deterministic: the same GPTQ weights as before
                    gptq_round_block(q_block, q_inputs.args, config.percdamp)
                bar.update()
            elif _quantized((name, None, q_block)):
                bar.set_postfix_str(name.split(".", 1)[-1])
                inputs = q_inputs.args
                before = _mse(run_block(q_block, inputs), targets)
                smooth, clips = _learnable(q_block)
                initial = [p.detach().clone() for p in smooth + clips]
                train_tic = time.perf_counter()
                steps = calibrate_block(q_block, inputs, targets, config.epochs, config.lr_smooth,
                                        config.lr_clip, config.seed + len(records))
                train_seconds = time.perf_counter() - train_tic
                after = _mse(run_block(q_block, inputs), targets) if steps else before
                restored = after > before  # a short or noisy run can end worse than it began
                if restored:
                    restore_parameters(q_block, initial)
                    after = before
                mse_gptq, gptq_kept = (_round_with_gptq(q_block, inputs, targets, after, config.percdamp)
                                       if config.weight_rounding == "gptq" else (None, False))
                records.append(BlockCalibration(name, len(inputs), steps, time.perf_counter() - tic,
                                                train_seconds, before, after, restored, mse_gptq,
                                                gptq_kept))
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
