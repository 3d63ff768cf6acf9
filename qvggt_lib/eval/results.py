"""The results run: the tiny-model analogues of the paper's Tables 1, 4, 10, 11 and Fig. 5, cached and resumable.

Every entry (a config quantized, then evaluated on the same test scenes) is stored in the JSON as
soon as it is done, with its calibration wall time, the machine and the date, and skipped when
present, so an interrupted run resumes where it stopped. The JSON remembers the settings; a run
with other settings refuses to mix (fresh=True starts over). ``markdown(data)`` renders it.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..model import build_vggt, load_model, load_pretrained
from ..quant.api import quantize
from ..quant.configs import ABLATIONS, BITS, METHODS, QuantVGGTConfig, make_config
from ..quant.sampling import METHODS as SELECTIONS
from ..quant.sampling import (
    SamplingConfig,
    calibration_scenes,
    candidate_pool,
    collect_candidate_features,
)
from .evaluate import evaluate, with_fidelity
from .tables import TABLE_COLUMNS, comparison_table, markdown_table

FULL = {"scenes": 32, "frames": 8, "long_frames": 16, "pool": 400, "calib_size": 40,
        "calib_frames": 8, "clusters": 8, "methods": list(METHODS), "bits": list(BITS),
        "ablations": list(ABLATIONS), "selections": list(SELECTIONS), "seeds": [0, 1, 2, 3, 4],
        "alphas": [0.3, 0.5, 0.7], "sizes": [5, 10, 20, 40], "clusters_sweep": [6, 8, 10],
        "epochs": QuantVGGTConfig().epochs}
QUICK = {**FULL, "scenes": 2, "frames": 2, "long_frames": 3, "pool": 8, "calib_size": 2,
         "calib_frames": 2, "clusters": 2, "methods": ["rtn"], "bits": ["w4a4"],
         "ablations": ["base", "dsfq"], "selections": ["random", "nfds"], "seeds": [0, 1],
         "alphas": [0.5], "sizes": [2], "clusters_sweep": [2], "epochs": 1}
SECTIONS = ("table1", "table4", "fig5", "table10", "table11")
FIDELITY_COLUMNS = {"depth_rel_diff": "Δ depth (%)", "points_rel_diff": "Δ points (%)",
                    "rotation_diff_deg": "Δ rot. (°)", "calibration_seconds": "Time (s)"}


def machine(threads: int) -> str:
    cpu = platform.processor() or platform.machine()
    return f"{platform.node()} {cpu}, {os.cpu_count()} CPUs, {threads} thread(s), torch {torch.__version__}"


def now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


def quantize_and_evaluate(model, config, calibration, evaluate_model, progress: bool = False) -> dict:
    """Quantize ``model`` with ``config`` and score it: {"config", "calibration_seconds",
    "report", **evaluate_model(q_model)}. The one loop behind every table row."""
    tic = time.perf_counter()
    q_model = quantize(model, config, calibration=calibration, progress=progress)
    return {"config": dataclasses.asdict(config) | {"type": type(config).__name__},
            "calibration_seconds": time.perf_counter() - tic,
            "report": q_model.quant_report.summary(), **evaluate_model(q_model)}


class ResultsRun:
    """The model, the cached calibration pool and features, and the JSON store of one out_dir."""

    def __init__(self, settings: dict, out_dir, checkpoint: str | None = None, quick: bool = False,
                 fresh: bool = False, threads: int = 2):
        self.settings, self.quick, self.threads = settings, quick, threads
        self.json_path, self.md_path = Path(out_dir) / "results.json", Path(out_dir) / "results.md"
        self.data = json.loads(self.json_path.read_text()) if self.json_path.is_file() else {}
        if self.data and not fresh and self.data["settings"] != settings:
            raise SystemExit(f"{self.json_path} was made with other settings; pass --fresh to "
                             "start over or --out-dir for a separate run")
        if fresh or not self.data:
            self.data = {"settings": settings, "runs": []}
        self.run_record = {"started": now(), "machine": machine(threads)}  # stored once it computes
        if quick:
            self.model = build_vggt("tiny", depth=2, intermediate_layer_idx=(0, 0, 1, 1), seed=0)
        else:
            self.model = load_model(checkpoint) if checkpoint else load_pretrained("tiny")
        self.model.eval()
        source = ("random weights (--quick)" if quick else f"checkpoint `{checkpoint}`" if checkpoint
                  else "the shipped tiny checkpoint")
        self.data["model"] = {"source": source, "config": self.model.config.to_dict()}
        self._pool = self._features = self._fp_predictions = None

    def pool(self):
        if self._pool is None:
            s = self.settings
            tic = time.perf_counter()
            self._pool = candidate_pool(s["pool"], s["calib_frames"], self.model.config.img_size)
            self._features = collect_candidate_features(self.model, self._pool,
                                                        min(4, self.model.config.depth), progress=True)
            print(f"calibration pool and NFDS features: {time.perf_counter() - tic:.0f}s")
        return self._pool, self._features

    def calibration(self, method="nfds", size=None, seed=0, clusters=None):
        pool, features = self.pool()
        s = self.settings
        sampling = SamplingConfig(method, size or s["calib_size"], len(pool), s["calib_frames"],
                                  seed=seed, num_clusters=clusters or s["clusters"])
        return calibration_scenes(self.model, sampling, pool=pool, features=features)

    @property
    def fp_predictions(self) -> list[dict]:
        """The float model's predictions on the test scenes (the fidelity reference), once."""
        if self._fp_predictions is None:
            s = self.settings
            self._fp_predictions = evaluate(self.model, num_scenes=s["scenes"], num_frames=s["frames"],
                                            seed=0, baselines=False, progress=False,
                                            keep_predictions=True)["predictions"]
        return self._fp_predictions

    def evaluate(self, model, frames=None) -> dict:
        """Metrics on the test scenes; at the main frame count also fidelity to the float model."""
        s = self.settings
        reference = self.fp_predictions if frames is None and model is not self.model else None
        result = evaluate(model, num_scenes=s["scenes"], num_frames=frames or s["frames"],
                          seed=0, baselines=False, progress=False, reference=reference)
        result.pop("per_scene")
        return result

    def fp_entry(self) -> dict:
        long = self.settings["long_frames"]
        return self.entry("fp", "fp", lambda: {"metrics": self.evaluate(self.model),
                                               f"metrics_{long}": self.evaluate(self.model, long)})

    def entry(self, section: str, key: str, make) -> dict:
        """The cached entry, or make() it, stamp it, store it and rewrite the outputs."""
        store = self.data.setdefault(section, {})
        if key not in store:
            if self.run_record not in self.data["runs"]:
                self.data["runs"].append(self.run_record)
            print(f"[{section}] {key} ...", flush=True)
            tic = time.perf_counter()
            store[key] = {**make(), "wall_seconds": time.perf_counter() - tic, "date": now(),
                          "machine": machine(self.threads)}
            self.save()
        return store[key]

    def quantized_entry(self, config, pick: dict | None = None, frames=(None,)) -> dict:
        """Quantize with config (calibration: self.calibration(**pick)), then evaluate."""
        calibration = self.calibration(**(pick or {})) if config.needs_calibration else None

        def score(q_model):
            return {"metrics" if f is None else f"metrics_{f}": self.evaluate(q_model, f) for f in frames}

        return quantize_and_evaluate(self.model, config, calibration, score)

    def save(self):
        self.json_path.parent.mkdir(parents=True, exist_ok=True)
        self.json_path.write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        self.md_path.write_text(markdown(self.data, self.quick))

    def run(self, sections=SECTIONS) -> None:
        """The float entry, then every section named, in order."""
        self.fp_entry()
        for name in sections:
            SECTION_RUNNERS[name](self)
        self.save()


# ----------------------------------------------------------------------------- sections


def _epochs(method: str, s: dict) -> dict:
    return {"epochs": s["epochs"]} if method == "quantvggt" else {}


def run_table1(run: ResultsRun):
    s = run.settings
    for method in s["methods"]:
        for bits in s["bits"]:
            config = make_config(method, bits, **_epochs(method, s))
            frames = (None, s["long_frames"]) if bits == "w4a4" else (None,)
            run.entry("table1", f"{method}/{bits}", partial(run.quantized_entry, config, None, frames))


def run_table4(run: ResultsRun):
    for name in run.settings["ablations"]:
        config = QuantVGGTConfig.ablation(name, bits="w4a4", epochs=run.settings["epochs"])
        run.entry("table4", name, partial(run.quantized_entry, config))


def run_fig5(run: ResultsRun):
    s = run.settings
    for selection in s["selections"]:
        for seed in s["seeds"]:
            # the rotation seed stays at 0: the spread over seeds is the calibration pick's alone
            config = QuantVGGTConfig(bits="w4a4", epochs=s["epochs"])
            pick = {"method": selection, "seed": seed}
            run.entry("fig5", f"{selection}/seed{seed}", partial(run.quantized_entry, config, pick))


def run_table10(run: ResultsRun):
    s = run.settings
    for alpha in s["alphas"]:
        config = QuantVGGTConfig(bits="w4a4", alpha=alpha, epochs=s["epochs"])
        run.entry("table10", f"alpha{alpha}", partial(run.quantized_entry, config))


def run_table11(run: ResultsRun):
    s = run.settings
    config = QuantVGGTConfig(bits="w4a4", epochs=s["epochs"])
    for size in s["sizes"]:
        run.entry("table11", f"size{size}", partial(run.quantized_entry, config, {"size": size}))
    for k in s["clusters_sweep"]:
        run.entry("table11", f"K{k}", partial(run.quantized_entry, config, {"clusters": k}))


SECTION_RUNNERS = {"table1": run_table1, "table4": run_table4, "fig5": run_fig5,
                   "table10": run_table10, "table11": run_table11}


# ----------------------------------------------------------------------------- markdown


def markdown(data: dict, quick: bool = False) -> str:
    """docs/results.md from the JSON store: the setup, then one table per section present."""
    s, cfg = data["settings"], data["model"]["config"]
    fp = data.get("fp", {}).get("fp")
    runs = "; ".join(f"{r['started']} on {r['machine']}" for r in data["runs"])
    setup = (
        f"Setup. Model: a tiny VGGT (the VGGT-1B architecture with {cfg['depth']} frame + "
        f"{cfg['depth']} global blocks of width {cfg['embed_dim']}, {cfg['img_size']} px), "
        f"{data['model']['source']}. Evaluation: the same {s['scenes']} rendered test scenes "
        f"(0..{s['scenes'] - 1}) x {s['frames']} frames for every row. Calibration: "
        f"{s['calib_size']} of {s['pool']} calib-split scenes of {s['calib_frames']} frames picked "
        f"by NFDS (K = {s['clusters']}, p = 0.2) unless stated; QuantVGGT calibrates each block "
        f"for {s['epochs']} epoch(s) (the paper: 15). AUC@30 at {s['long_frames']} frames: W4A4 "
        "rows of Table 1 only. The columns (retention, Δ depth, Δ points, Δ rot., time) are "
        "defined in `docs/results-notes.md`, with what the numbers say.")
    kind = "--quick smoke run, random weights" if quick else "full run"
    lines = ["# Results: post-training quantization of the tiny VGGT", "",
             (f"Written by `scripts/run_results.py` ({kind}); machines and dates per entry are in "
              f"`results.json`. Runs: {runs}."), "", setup, ""]
    columns = {**TABLE_COLUMNS, "auc30_long": f"AUC@30 ({s['long_frames']} fr.)", **FIDELITY_COLUMNS}
    if fp is not None:
        fp_row = {"method": "fp", "bits": "", "metrics": _with_long(fp, s)}
        rows = [fp_row] + [{"method": k.split("/")[0], "bits": k.split("/")[1],
                            "metrics": _with_long(v, s)} for k, v in data.get("table1", {}).items()]
        lines += ["## Table 1 analogue: methods x bits", "", comparison_table(rows, columns), ""]
        for section, title in (("table4", "Table 4 analogue: DSFQ ablation (W4A4)"),
                               ("table10", "Table 10 analogue: smoothing alpha (W4A4)"),
                               ("table11", "Table 11 analogue: calibration size and K (W4A4)")):
            if data.get(section):
                rows = [fp_row] + [{"method": "quantvggt", "bits": "w4a4", "label": k,
                                    "metrics": _with_long(v, s)} for k, v in data[section].items()]
                table = comparison_table(rows, {**TABLE_COLUMNS, **FIDELITY_COLUMNS})
                lines += [f"## {title}", "", table, ""]
    if data.get("fig5"):
        lines += ["## Fig. 5 analogue: calibration pick (QuantVGGT W4A4), mean ± std over seeds", "",
                  _fig5_table(data["fig5"], s), ""]
    return "\n".join(lines)


def _fig5_table(fig5: dict, s: dict) -> str:
    header = ["Pick", "seeds", "AUC@30", "AUC@15", "AbsRel", "Δ depth (%)", "Δ points (%)",
              "Δ rot. (°)", "per-seed AUC@30"]
    rows = []
    for selection in s["selections"]:
        entries = [_with_long(v, s) | {"metrics": v["metrics"]}
                   for k, v in fig5.items() if k.startswith(selection + "/")]
        if entries:
            cells = [_mean_std([e[key] for e in entries], d)
                     for key, d in (("auc30", 2), ("auc15", 2), ("depth_abs_rel", 3),
                                    ("depth_rel_diff", 2), ("points_rel_diff", 2), ("rotation_diff_deg", 2))]
            rows.append([selection, len(entries), *cells,
                         ", ".join(f"{e['metrics']['auc30']:.2f}" for e in entries)])
    return markdown_table(header, rows, right=[False] + [True] * 7 + [False])


def _with_long(entry: dict, s: dict) -> dict:
    long = entry.get(f"metrics_{s['long_frames']}")
    return {**with_fidelity(entry["metrics"]),
            "auc30_long": None if long is None else long["auc30"],
            "calibration_seconds": entry.get("calibration_seconds")}


def _mean_std(values, digits: int) -> str:
    if any(v is None for v in values):
        return "–"
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"
