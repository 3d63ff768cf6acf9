"""The paper-scale run: FP, RTN, QuaRot and QuantVGGT at W8A8 and W4A4 on Co3Dv2 (Table 1), resumable per row.

The machinery of the tiny tables (``results.ResultsRun``: one JSON entry per row, stored as soon
as it is made, claimed by the process making it, settings checked on resume), with Co3D in place
of rendered scenes: the NFDS pool is ``co3d_calibration_pool`` (training sequences, the paper's
400 candidates), every row is scored by ``evaluate_co3d`` on the test sequences, with fidelity
against the float model's cameras on the same frames (stored in the float entry, so a resumed
run does not evaluate the float model again). QuantVGGT's block calibration also resumes inside
a row (``OUT_DIR/<method>_<bits>.calibration-progress``). Everything runs in float32 on the
chosen device (the quantizers are simulated).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from ..data.co3d import co3d_calibration_pool
from ..quant.configs import make_config
from ..quant.sampling import collect_candidate_features
from .co3d import evaluate_co3d
from .evaluate import with_fidelity
from .results import FIDELITY_COLUMNS, ResultsRun, _epochs, quantize_and_evaluate
from .tables import comparison_table

CO3D_SETTINGS = {"methods": ["rtn", "quarot", "quantvggt"], "bits": ["w8a8", "w4a4"], "categories": None,
                 "frames": 10, "min_frames": 50, "max_sequences": None, "seed": 0, "pool": 400,
                 "calib_size": 40, "calib_frames": 8, "clusters": 8, "calib_min_frames": 50, "epochs": None}
POSE_COLUMNS = {"auc30": "AUC@30", "auc15": "AUC@15", "auc5": "AUC@5", "auc3": "AUC@3"}


class Co3DResultsRun(ResultsRun):
    """A ResultsRun on Co3Dv2: ``co3d_dir`` (the dataset root) and ``anno_dir`` (VGGT's ``.jgz`` files)."""

    def __init__(self, settings: dict, out_dir, co3d_dir, anno_dir, checkpoint: str | None = None,
                 device: str = "cpu", fresh: bool = False, threads: int = 2):
        super().__init__(settings, out_dir, checkpoint, fresh=fresh, threads=threads)
        self.co3d_dir, self.anno_dir, self.out_dir = Path(co3d_dir), Path(anno_dir), Path(out_dir)
        self.model.to(device)

    def pool(self):
        if self._pool is None:
            s = self.settings
            self._pool = co3d_calibration_pool(
                self.co3d_dir, self.anno_dir, s["categories"], s["pool"], s["calib_frames"],
                self.model.config.img_size, seed=s["seed"], min_frames=s["calib_min_frames"])
            self._features = collect_candidate_features(self.model, self._pool, min(4, self.model.config.depth))
        return self._pool, self._features

    def evaluate(self, model, frames=None, heldout: bool = False, keep_predictions: bool = False) -> dict:
        """evaluate_co3d on the test sequences; a quantized model also against the float cameras."""
        s = self.settings
        reference = None if model is self.model else self.fp_entry()["predictions"]
        return evaluate_co3d(model, self.co3d_dir, self.anno_dir, s["categories"], s["frames"], s["min_frames"],
                             s["seed"], reference=reference, keep_predictions=keep_predictions,
                             progress=False, max_sequences=s["max_sequences"])

    def fp_entry(self) -> dict:
        def make():
            metrics = self.evaluate(self.model, keep_predictions=True)
            predictions = [{**p, "extrinsics": p["extrinsics"].tolist()} for p in metrics.pop("predictions")]
            return {"metrics": metrics, "predictions": predictions}

        return self.entry("fp", "fp", make)

    def quantized_entry(self, config, pick: dict | None = None, frames=(None,), heldout: bool = False) -> dict:
        calibration = self.calibration(**(pick or {})) if config.needs_calibration else None
        resume = self.out_dir / f"{config.method}_{config.bits}.calibration-progress"
        options = {"resume_file": resume} if config.method == "quantvggt" else {}
        entry = quantize_and_evaluate(self.model, config, calibration,
                                      lambda q_model: {"metrics": self.evaluate(q_model)}, **options)
        resume.unlink(missing_ok=True)
        return entry

    def run(self, sections=("table1",)) -> None:
        """The float row, then every method x bits row."""
        self.fp_entry()
        s = self.settings
        for method in s["methods"]:
            for bits in s["bits"]:
                epochs = {} if s["epochs"] is None else _epochs(method, s)
                config = make_config(method, bits, seed=s["seed"], **epochs)
                self.entry("table1", f"{method}/{bits}", partial(self.quantized_entry, config))
        with self.lock:
            self.reload()
            self.save()

    def markdown(self) -> str:
        s, data = self.settings, self.data
        fp = data.get("fp", {}).get("fp")
        categories = "all 41" if s["categories"] is None else ", ".join(s["categories"])
        limit = "" if s["max_sequences"] is None else f", at most {s['max_sequences']} sequences each"
        lines = ["# Co3Dv2 camera pose: VGGT and its quantized versions (the paper's Table 1 protocol)", "",
                 f"Model: {data['model']['source']}. Protocol: `qvggt_lib.eval.co3d` (docs/co3d.md); "
                 f"{s['frames']} random frames per test sequence with at least {s['min_frames']} frames, "
                 f"seed {s['seed']}, categories: {categories}{limit}. "
                 f"Calibration: {s['calib_size']} of {s['pool']} Co3D training sequences of {s['calib_frames']} "
                 f"frames picked by NFDS (K = {s['clusters']}). Runs: "
                 + "; ".join(f"{r['started']} on {r['machine']}" for r in data["runs"]) + ".", ""]
        if fp is None:
            return "\n".join(lines)
        order = [f"{m}/{b}" for m in s["methods"] for b in s["bits"]]
        stored = data.get("table1", {})
        rows = [{"method": "fp", "bits": "", "metrics": fp["metrics"]}] + [
            {"method": key.split("/")[0], "bits": key.split("/")[1],
             "metrics": {**with_fidelity(stored[key]["metrics"]),
                         "calibration_seconds": stored[key]["calibration_seconds"]}}
            for key in order if key in stored]
        fidelity = {k: v for k, v in FIDELITY_COLUMNS.items() if k.startswith("fidelity_auc")
                    or k in ("rotation_diff_deg", "calibration_seconds")}
        lines += ["## Accuracy against the Co3D cameras", "", comparison_table(rows, POSE_COLUMNS, ("auc30",)), "",
                  "## Fidelity to the float model's cameras", "", comparison_table(rows, fidelity, ()), ""]
        return "\n".join(lines)


def co3d_settings(**overrides) -> dict:
    """CO3D_SETTINGS with ``overrides`` (unknown names raise); categories as a list or None."""
    unknown = sorted(set(overrides) - set(CO3D_SETTINGS))
    if unknown:
        raise ValueError(f"unknown Co3D run settings {unknown}; known: {sorted(CO3D_SETTINGS)}")
    settings = {**CO3D_SETTINGS, **overrides}
    if settings["categories"] is not None:
        settings["categories"] = list(settings["categories"])
    return settings

