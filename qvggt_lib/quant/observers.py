"""Forward hooks, the one way to look inside a VGGT: running max|x| and max|x R|, GPTQ Hessians, inputs.

Everything calibration and the course measure comes from the inputs (or outputs) of named
modules while scenes run through the model:

* ``hooks(model, {name: fn})``: call fn on every call of each module, removed on exit;
* ``AbsMaxObserver``: the running per-channel max|x| (or max|x R|) over every token seen,
  what SmoothQuant's s_j = max|x_j|^a / max|W_j|^(1-a) needs;
* ``collect_linear_statistics``: per target linear, max|x|, max|x R| and the GPTQ Hessian
  H = 2/n sum_t x_t x_t^T (of x R when the layer rotates) over all calibration scenes;
* ``record_inputs``: the inputs of chosen modules, kept as [tokens, K] tensors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .gptq import HessianAccumulator
from .hadamard import RandomHadamard
from .targets import SCOPES, quantizable_linears


class StopForward(Exception):
    """Raised by a hook once everything needed from this forward has been seen."""


@contextlib.contextmanager
def hooks(model: nn.Module, callbacks: dict[str, Callable], on: str = "input") -> Iterator[None]:
    """Within the context, every call of module ``name`` calls ``callbacks[name](args)`` with its
    positional inputs (on="input") or ``callbacks[name](output)`` (on="output")."""
    if on not in ("input", "output"):
        raise ValueError(f"on must be 'input' or 'output', got {on!r}")
    handles = []
    for name, fn in callbacks.items():
        module = model.get_submodule(name)
        if on == "input":
            handles.append(module.register_forward_pre_hook(lambda m, args, fn=fn: fn(args)))
        else:
            handles.append(module.register_forward_hook(lambda m, args, out, fn=fn: fn(out)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class EvalMode:
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


class AbsMaxObserver:
    """Running per-channel max|x| (or max|x R| with a rotation) over every token seen.

    Feed it with update(x), x: [..., K]; read absmax [K] (float32).
    """

    def __init__(self, rotation: RandomHadamard | None = None):
        self.rotation = rotation
        self.absmax: Tensor | None = None

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        x = x.detach().float()
        if self.rotation is not None:
            x = self.rotation.to(x.device).rotate(x)
        batch_absmax = x.abs().reshape(-1, x.shape[-1]).amax(dim=0)
        self.absmax = batch_absmax if self.absmax is None else torch.maximum(self.absmax, batch_absmax)


# ----------------------------------------------------------------------------- scenes in


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
    device = next(model.parameters()).device
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


def run_scene(model: nn.Module, scene: Tensor, runs_in: str) -> None:
    """The smallest forward that reaches the blocks of a scope: aggregator (+ camera head)."""
    tokens, _ = model.aggregator(scene[None])
    if runs_in == "camera_head":
        model.camera_head([tokens[-1].float()])


def runs_in(names) -> str:
    """"camera_head" if any of the module ``names`` lies in the camera trunk, else "aggregator"."""
    camera_path = SCOPES["camera_head"].path
    return "camera_head" if any(n.startswith(camera_path + ".") for n in names) else "aggregator"


def present_scopes(model: nn.Module) -> tuple[str, ...]:
    """The scopes whose blocks exist in model (a VGGT without a camera head has no trunk)."""
    present = []
    for name, scope in SCOPES.items():
        try:
            model.get_submodule(scope.path)
            present.append(name)
        except AttributeError:
            pass
    return tuple(present)


def run_scenes(model: nn.Module, scenes, runs_in_: str, progress: bool = False,
               desc: str = "statistics") -> None:
    """Run every scene through the smallest forward (eval mode, no autograd); a hook's
    StopForward ends that scene's forward early."""
    with EvalMode(model):
        for scene in tqdm(scenes, desc=desc, unit="scene", disable=not progress):
            try:
                run_scene(model, scene, runs_in_)
            except StopForward:
                pass


# ----------------------------------------------------------------------------- linear statistics


@dataclass
class LinearStatistics:
    """What calibration saw at one linear's input x [..., K]."""

    act_absmax: Tensor  # [K] max over all tokens of |x|
    rotated_absmax: Tensor | None  # [K] max |x R|, when a rotation was given
    hessian: Tensor | None  # [K, K] 2/n sum x x^T of x R (rotation given) or x; if need_hessian
    num_tokens: int


class LinearObserver:
    """Per linear: AbsMaxObservers of x and x R, a HessianAccumulator, a token count.

    callbacks() gives the hook functions for ``hooks``; with ``stop_at`` (a name), that layer's
    callback raises StopForward once it has recorded.
    """

    def __init__(self, names, rotations=None, need_hessian=False, stop_at=None):
        self.names, self.rotations = list(names), rotations or {}
        self.need_hessian, self.stop_at = need_hessian, stop_at
        self.plain = {name: AbsMaxObserver() for name in self.names}
        self.rotated = {name: AbsMaxObserver() for name in self.names if name in self.rotations}
        self.hessians = {name: HessianAccumulator() for name in self.names} if need_hessian else {}
        self.tokens = dict.fromkeys(self.names, 0)

    def _observe(self, name: str, args: tuple) -> None:
        x = args[0].detach().float()
        self.tokens[name] += x.numel() // x.shape[-1]
        self.plain[name].update(x)
        if name in self.rotations:
            x = self.rotations[name].to(x.device).rotate(x)
            self.rotated[name].update(x)
        if self.need_hessian:
            self.hessians[name].update(x)
        if name == self.stop_at:
            raise StopForward

    def callbacks(self) -> dict[str, Callable]:
        return {name: lambda args, name=name: self._observe(name, args) for name in self.names}

    def results(self) -> dict[str, LinearStatistics]:
        missing = [name for name, n in self.tokens.items() if n == 0]
        if missing:
            raise RuntimeError(f"the calibration forward never reached {missing}")
        return {
            name: LinearStatistics(
                act_absmax=self.plain[name].absmax,
                rotated_absmax=self.rotated[name].absmax if name in self.rotated else None,
                hessian=self.hessians[name].hessian if self.need_hessian else None,
                num_tokens=self.tokens[name],
            )
            for name in self.names
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
    where = runs_in(names)
    order = {name: i for i, name in enumerate(quantizable_linears(model, present_scopes(model)))}
    stop_at = None
    if where == "aggregator" and all(n in order for n in names):
        stop_at = max(names, key=order.get)  # nothing after the last hooked layer is needed
    observer = LinearObserver(names, rotations, need_hessian, stop_at)
    with hooks(model, observer.callbacks()):
        run_scenes(model, scenes, where, progress)
    return observer.results()


def block_linear_statistics(
    block: nn.Module,
    inputs: list[tuple],
    names,
    rotations: dict[str, RandomHadamard] | None = None,
    need_hessian: bool = False,
) -> dict[str, LinearStatistics]:
    """As collect_linear_statistics, for linears of one block (names relative to the block,
    e.g. "attn.qkv") fed with cached block inputs (reconstruction.BlockInputs.args)."""
    observer = LinearObserver(names, rotations, need_hessian)
    with hooks(block, observer.callbacks()), EvalMode(block):
        for args in inputs:
            block(*args)
    return observer.results()


@contextlib.contextmanager
def record_inputs(model: nn.Module, names) -> Iterator[dict[str, Tensor]]:
    """Record the first positional input of the modules ``names`` (``named_modules`` names).

    Yields a dict that is filled when the ``with`` block exits: ``{name: Tensor [tokens, K]}``,
    every call's input flattened to 2-D, detached, in float32 on the CPU, concatenated in call
    order. Modules that were not called are left out.
    """
    chunks: dict[str, list[Tensor]] = {name: [] for name in names}

    def keep(name):
        return lambda args: chunks[name].append(args[0].detach().reshape(-1, args[0].shape[-1])
                                                .float().cpu())

    recorded: dict[str, Tensor] = {}
    try:
        with hooks(model, {name: keep(name) for name in chunks}):
            yield recorded
    finally:
        recorded.update({name: torch.cat(parts) for name, parts in chunks.items() if parts})
