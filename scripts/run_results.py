"""The full results run on the tiny VGGT (not a test): writes docs/results.md and results.json.

    python scripts/run_results.py [--checkpoint PATH] [--threads 2] [--sections table1 fig5 ...]
    python scripts/run_results.py --quick        # minutes: random tiny model, tiny settings

Sections, each the tiny-model analogue of a QuantVGGT (Feng et al., 2025) result:

    table1       FP, RTN, SmoothQuant, QuaRot, GPTQ, QuantVGGT x W8A8, W6A6, W4A8, W4A4 on the same
                 test scenes (8 frames), plus AUC@30 at 16 frames for W4A4
    table4       W4A4 ablation of DSFQ: base, rotation, smoothing, smoothing-then-rotation, DSFQ
    fig5         calibration pick random / filtered / clustered / NFDS, mean and std over 5 seeds
    table10      smoothing alpha 0.3 / 0.5 / 0.7
    table11      calibration size 5 / 10 / 20 / 40 and NFDS clusters K 6 / 8 / 10

Every entry is cached in the JSON as soon as it is done (with its calibration wall time, the
machine and the date) and skipped when present, so an interrupted run resumes where it stopped.
The JSON remembers the settings; a run with other settings refuses to mix (use --fresh).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from qvggt_lib.evaluate import evaluate
from qvggt_lib.model import build_vggt, load_model, load_pretrained
from qvggt_lib.quant.api import (
    ABLATIONS,
    BITS,
    METHODS,
    TABLE_COLUMNS,
    QuantVGGTConfig,
    comparison_table,
    make_config,
    quantize,
)
from qvggt_lib.quant.calibration import calibration_scenes
from qvggt_lib.quant.sampling import METHODS as SELECTIONS
from qvggt_lib.quant.sampling import candidate_pool, collect_candidate_features

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


class Run:
    """The model, the cached calibration pool and features, and the JSON store."""

    def __init__(self, args, settings: dict):
        self.args, self.settings = args, settings
        self.json_path = Path(args.out_dir) / "results.json"
        self.md_path = Path(args.out_dir) / "results.md"
        self.data = json.loads(self.json_path.read_text()) if self.json_path.is_file() else {}
        if self.data and not args.fresh and self.data["settings"] != settings:
            raise SystemExit(f"{self.json_path} was made with other settings; pass --fresh to "
                             "start over or --out-dir for a separate run")
        if args.fresh or not self.data:
            self.data = {"settings": settings, "runs": []}
        self.data["runs"].append({"started": now(), "machine": machine(args.threads)})
        if args.quick:
            self.model = build_vggt("tiny", depth=2, intermediate_layer_idx=(0, 0, 1, 1), seed=0)
        elif args.checkpoint:
            self.model = load_model(args.checkpoint)
        else:
            self.model = load_pretrained("tiny")
        self.model.eval()
        source = ("random weights (--quick)" if args.quick
                  else f"checkpoint `{args.checkpoint}`" if args.checkpoint
                  else "the shipped tiny checkpoint")
        self.data["model"] = {"source": source, "config": self.model.config.to_dict()}
        self._pool = self._features = None

    _fp_predictions = None

    def pool(self):
        if self._pool is None:
            s = self.settings
            tic = time.perf_counter()
            self._pool = candidate_pool(s["pool"], s["calib_frames"], self.model.config.img_size)
            self._features = collect_candidate_features(self.model, self._pool,
                                                        min(4, self.model.config.depth),
                                                        progress=True)
            print(f"calibration pool and NFDS features: {time.perf_counter() - tic:.0f}s")
        return self._pool, self._features

    def calibration(self, method="nfds", size=None, seed=0, clusters=None):
        pool, features = self.pool()
        s = self.settings
        return calibration_scenes(self.model, method, size or s["calib_size"], seed=seed,
                                  num_clusters=clusters or s["clusters"], pool=pool,
                                  features=features)

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
            print(f"[{section}] {key} ...", flush=True)
            tic = time.perf_counter()
            store[key] = {**make(), "wall_seconds": time.perf_counter() - tic, "date": now(),
                          "machine": machine(self.args.threads)}
            self.save()
        return store[key]

    def quantized_entry(self, config, pick: dict | None = None, frames=(None,)) -> dict:
        """Quantize with config (calibration: self.calibration(**pick)), then evaluate."""
        calibration = self.calibration(**(pick or {})) if config.needs_calibration else None
        tic = time.perf_counter()
        q_model = quantize(self.model, config, calibration=calibration, progress=False)
        out = {"config": dataclasses.asdict(config) | {"type": type(config).__name__},
               "calibration_seconds": time.perf_counter() - tic,
               "report": q_model.quant_report.summary()}
        for f in frames:
            out["metrics" if f is None else f"metrics_{f}"] = self.evaluate(q_model, f)
        return out

    def save(self):
        self.json_path.parent.mkdir(parents=True, exist_ok=True)
        self.json_path.write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        self.md_path.write_text(markdown(self.data, self.args))


def now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


def machine(threads: int) -> str:
    cpu = platform.processor() or platform.machine()
    return (f"{platform.node()} {cpu}, {os.cpu_count()} CPUs, {threads} thread(s), "
            f"torch {torch.__version__}")


# ----------------------------------------------------------------------------- sections


def run_table1(run: Run):
    s = run.settings
    for method in s["methods"]:
        for bits in s["bits"]:
            config = make_config(method, bits, **epochs(method, s))
            frames = (None, s["long_frames"]) if bits == "w4a4" else (None,)
            run.entry("table1", f"{method}/{bits}",
                      partial(run.quantized_entry, config, None, frames))


def run_table4(run: Run):
    for name in run.settings["ablations"]:
        config = QuantVGGTConfig.ablation(name, bits="w4a4", epochs=run.settings["epochs"])
        run.entry("table4", name, partial(run.quantized_entry, config))


def run_fig5(run: Run):
    s = run.settings
    for selection in s["selections"]:
        for seed in s["seeds"]:
            # the rotation seed stays at 0: the spread over seeds is the calibration pick's alone
            config = QuantVGGTConfig(bits="w4a4", epochs=s["epochs"])
            pick = {"method": selection, "seed": seed}
            run.entry("fig5", f"{selection}/seed{seed}", partial(run.quantized_entry, config, pick))


def run_table10(run: Run):
    s = run.settings
    for alpha in s["alphas"]:
        config = QuantVGGTConfig(bits="w4a4", alpha=alpha, epochs=s["epochs"])
        run.entry("table10", f"alpha{alpha}", partial(run.quantized_entry, config))


def run_table11(run: Run):
    s = run.settings
    config = QuantVGGTConfig(bits="w4a4", epochs=s["epochs"])
    for size in s["sizes"]:
        run.entry("table11", f"size{size}", partial(run.quantized_entry, config, {"size": size}))
    for k in s["clusters_sweep"]:
        run.entry("table11", f"K{k}", partial(run.quantized_entry, config, {"clusters": k}))


def epochs(method: str, s: dict) -> dict:
    return {"epochs": s["epochs"]} if method == "quantvggt" else {}


# ----------------------------------------------------------------------------- markdown


def markdown(data: dict, args) -> str:
    s, model = data["settings"], data["model"]
    cfg = model["config"]
    fp = data.get("fp", {}).get("fp")
    kind = "--quick smoke run, random weights" if args.quick else "full run"
    runs = "; ".join(f"{r['started']} on {r['machine']}" for r in data["runs"])
    setup = (
        f"Setup. Model: a tiny VGGT (the VGGT-1B architecture with {cfg['depth']} frame + "
        f"{cfg['depth']} global blocks of width {cfg['embed_dim']}, {cfg['img_size']} px), "
        f"{model['source']}. Evaluation: the same {s['scenes']} rendered test scenes "
        f"(0..{s['scenes'] - 1}) x {s['frames']} frames for every row. Quantized layers: all "
        "four linears of every aggregator frame and global block (the paper's 192 layers of "
        "VGGT-1B); weights symmetric per output channel, activations symmetric dynamic per "
        f"token. Calibration: {s['calib_size']} of {s['pool']} calib-split scenes of "
        f"{s['calib_frames']} frames picked by NFDS (K = {s['clusters']}, p = 0.2) unless "
        f"stated; QuantVGGT calibrates each block for {s['epochs']} epoch(s) (the paper: 15) "
        "with AdamW, lr 5e-3 (s) and 5e-2 (clips). "
        f"AUC@30 at {s['long_frames']} frames: W4A4 rows of Table 1 only. Retention: "
        "Q / FP x 100 for AUC; FP / Q x 100 for AbsRel (lower is better), so 100 % means as "
        "good as float either way. Δ depth and Δ points: how far the quantized model's depth "
        "and point maps are from the float model's own predictions on the same scenes "
        "(mean |d - d_FP| / d_FP and ||P - P_FP|| / ||P_FP||, percent; "
        "`qvggt_lib.evaluate` fidelity), the sharper ruler when the metrics against ground "
        "truth barely move; Δ rot.: the mean angle between the quantized and the float model's "
        "predicted camera rotations, degrees. Time: quantization wall time (statistics, GPTQ or block "
        "calibration), seconds."
    )
    lines = [
        "# Results: post-training quantization of the tiny VGGT",
        "",
        (f"Written by `scripts/run_results.py` ({kind}); machines and dates per entry are in "
         f"`results.json`. Runs: {runs}."),
        "",
        setup,
        "",
        ("What these numbers say about the method, and where the tiny model disagrees with the "
         "paper: `docs/results-notes.md`."),
        "",
    ]
    time_column = {"depth_rel_diff": "Δ depth (%)", "points_rel_diff": "Δ points (%)",
                   "rotation_diff_deg": "Δ rot. (°)", "calibration_seconds": "Time (s)"}
    columns = {**TABLE_COLUMNS, "auc30_long": f"AUC@30 ({s['long_frames']} fr.)", **time_column}
    if fp is not None:
        fp_row = {"method": "fp", "bits": "", "metrics": _with_long(fp, s)}
        lines += ["## Table 1 analogue: methods x bits", ""]
        rows = [fp_row] + [{"method": k.split("/")[0], "bits": k.split("/")[1],
                            "metrics": _with_long(v, s)} for k, v in data.get("table1", {}).items()]
        lines += [comparison_table(rows, columns), ""]
        for section, title in (("table4", "Table 4 analogue: DSFQ ablation (W4A4)"),
                               ("table10", "Table 10 analogue: smoothing alpha (W4A4)"),
                               ("table11", "Table 11 analogue: calibration size and K (W4A4)")):
            if data.get(section):
                rows = [fp_row] + [{"method": "quantvggt", "bits": "w4a4", "label": k,
                                    "metrics": _with_long(v, s)} for k, v in data[section].items()]
                table = comparison_table(rows, {**TABLE_COLUMNS, **time_column})
                lines += [f"## {title}", "", table, ""]
    if data.get("fig5"):
        lines += ["## Fig. 5 analogue: calibration pick (QuantVGGT W4A4), mean ± std over seeds",
                  "", ("| Pick | seeds | AUC@30 | AUC@15 | AbsRel | Δ depth (%) | Δ points (%) "
                       "| Δ rot. (°) | per-seed AUC@30 |"), "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for selection in s["selections"]:
            entries = [_with_long(v, s) | {"metrics": v["metrics"]}
                       for k, v in data["fig5"].items() if k.startswith(selection + "/")]
            if entries:
                cells = [_mean_std([e[key] for e in entries], d)
                         for key, d in (("auc30", 2), ("auc15", 2), ("depth_abs_rel", 3),
                                        ("depth_rel_diff", 2), ("points_rel_diff", 2),
                                        ("rotation_diff_deg", 2))]
                seeds = ", ".join(f"{e['metrics']['auc30']:.2f}" for e in entries)
                lines.append(f"| {selection} | {len(entries)} | " + " | ".join(cells)
                             + f" | {seeds} |")
        lines.append("")
    return "\n".join(lines)


def _with_long(entry: dict, s: dict) -> dict:
    long = entry.get(f"metrics_{s['long_frames']}")
    return {**entry["metrics"], **entry["metrics"].get("fidelity", {}),
            "auc30_long": None if long is None else long["auc30"],
            "calibration_seconds": entry.get("calibration_seconds")}


def _mean_std(values, digits: int) -> str:
    if any(v is None for v in values):
        return "–"
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None,
                        help="float tiny checkpoint (default: the shipped one)")
    parser.add_argument("--out-dir", default=None, help="default docs/ (--quick: a temp dir)")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="random tiny model, tiny settings")
    parser.add_argument("--fresh", action="store_true", help="ignore and overwrite cached results")
    args = parser.parse_args()
    if args.out_dir is None:
        args.out_dir = tempfile.mkdtemp(prefix="qvggt-quick-") if args.quick else "docs"
    torch.set_num_threads(args.threads)
    settings = {**(QUICK if args.quick else FULL), "checkpoint": args.checkpoint,
                "quick": args.quick}
    run = Run(args, settings)
    sections = {"table1": run_table1, "table4": run_table4, "fig5": run_fig5,
                "table10": run_table10, "table11": run_table11}
    run.fp_entry()
    for name in args.sections:
        sections[name](run)
    run.save()
    print(f"wrote {run.md_path} and {run.json_path}")


if __name__ == "__main__":
    main()
