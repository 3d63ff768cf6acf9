"""QuantReport: what quantize() did, per layer (shape, bits, rotation, smoothing, seconds) and per phase."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class LayerReport:
    name: str
    shape: tuple[int, int]  # (out_features, in_features)
    weight_bits: int
    act_bits: int
    rotation: bool
    smooth: bool
    hadamard_seed: int | None
    seconds: float = 0.0  # calibration time of this layer (its share of its block's, for recon.)


@dataclass
class QuantReport:
    """What quantize() did: per layer, and the wall times of its phases (seconds)."""

    method: str
    bits: str
    layers: list[LayerReport]
    seconds: dict[str, float] = field(default_factory=dict)
    num_calibration_scenes: int = 0
    blocks: list[dict] = field(default_factory=list)  # reconstruction.BlockCalibration as dicts

    def summary(self) -> str:
        rotated = sum(layer.rotation for layer in self.layers)
        smoothed = sum(layer.smooth for layer in self.layers)
        params = sum(a * b for a, b in (layer.shape for layer in self.layers))
        times = ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items())
        lines = [(f"{self.method} {self.bits}: {len(self.layers)} linears ({params / 1e6:.2f}M "
                  f"weights), {rotated} rotated, {smoothed} smoothed, "
                  f"{self.num_calibration_scenes} calibration scenes; {times}")]
        if self.blocks:
            before = sum(b["mse_before"] for b in self.blocks) / len(self.blocks)
            after = sum(b["mse_after"] for b in self.blocks) / len(self.blocks)
            lines.append(f"block reconstruction: {len(self.blocks)} blocks, mean output MSE "
                         f"{before:.3g} -> {after:.3g}")
            rounded = [b for b in self.blocks if b.get("mse_gptq") is not None]
            if rounded:
                final = sum(min(b["mse_gptq"], b["mse_after"]) for b in rounded) / len(rounded)
                lines.append(f"GPTQ rounding: kept in {sum(b['gptq_kept'] for b in rounded)} of "
                             f"{len(rounded)} blocks, mean output MSE -> {final:.3g}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> QuantReport:
        layers = [LayerReport(**{**layer, "shape": tuple(layer["shape"])}) for layer in d["layers"]]
        return cls(**{**d, "layers": layers})
