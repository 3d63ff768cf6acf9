"""The results run: the tiny-model analogues of the paper's Tables 1, 4, 10, 11 and Fig. 5, cached and resumable.

Every entry (a config quantized, then evaluated on the same test scenes) is stored in the JSON as
soon as it is done, with its calibration wall time, the machine and the date, and skipped when
present, so an interrupted run resumes where it stopped. The JSON remembers the settings; a run
with other settings refuses to mix (fresh=True starts over). Several processes may fill one
JSON at once (``run_workers``): each entry is claimed by the process that makes it and merged
into the file under a lock.
``markdown(data)`` renders it.

Fidelity (closeness to the float model's own outputs, the sharper ruler for a coarse model,
docs/fidelity.md) is scored on the test scenes and, for Table 1 and the rounding variants,
re-checked on held-out scenes that no choice was tuned on.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import multiprocessing
import os
import platform
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from scipy import stats

from ..model import build_vggt, load_model, load_pretrained
from ..quant.api import quantize
from ..quant.configs import ABLATIONS, BITS, METHODS, QuantVGGTConfig, make_config
from ..quant.quantizer import CLIP_INIT_LOGIT
from ..quant.sampling import METHODS as SELECTIONS
from ..quant.sampling import (
    SamplingConfig,
    calibration_scenes,
    candidate_pool,
    collect_candidate_features,
)
from .evaluate import evaluate, with_fidelity
from .tables import TABLE_COLUMNS, comparison_table, markdown_table

FULL = {"scenes": 32, "frames": 8, "long_frames": 16, "heldout_scenes": 32, "pool": 400,
        "calib_size": 40, "calib_frames": 8, "clusters": 8, "methods": list(METHODS),
        "bits": list(BITS), "ablations": list(ABLATIONS), "selections": list(SELECTIONS),
        "seeds": list(range(10)), "alphas": [0.3, 0.5, 0.7], "sizes": [5, 10, 20, 40],
        "clusters_sweep": [6, 8, 10], "epochs": QuantVGGTConfig().epochs,
        "epochs_sweep": [3, 8, 15], "rounding_bits": ["w8a8", "w4a4"]}
QUICK = {**FULL, "scenes": 2, "frames": 2, "long_frames": 3, "heldout_scenes": 2, "pool": 8,
         "calib_size": 2, "calib_frames": 2, "clusters": 2, "methods": ["rtn", "quantvggt"],
         "bits": ["w4a4"], "ablations": ["base", "dsfq"], "selections": ["random", "nfds"],
         "seeds": [0, 1, 2], "alphas": [0.5], "sizes": [2], "clusters_sweep": [2], "epochs": 1,
         "epochs_sweep": [1, 2], "rounding_bits": ["w4a4"]}
SECTIONS = ("table1", "rounding", "epochs", "table4", "fig5", "table10", "table11")
ROUNDING_VARIANTS = {  # from the paper's recipe to the default, one change at a time (equal epochs)
    "paper": {"clip_init_logit": CLIP_INIT_LOGIT, "weight_rounding": "rtn", "input_from": "fp"},
    "clips_by_bits": {"weight_rounding": "rtn", "input_from": "fp"},
    "gptq": {"clip_init_logit": CLIP_INIT_LOGIT, "weight_rounding": "gptq", "input_from": "fp"},
    "gptq+quantized_inputs": {"clip_init_logit": CLIP_INIT_LOGIT},
    "default": {},  # QuantVGGTConfig(): GPTQ, quantized inputs, clips by bits
}
FIDELITY_COLUMNS = {"fidelity_auc30": "AUC@30 vs FP", "fidelity_auc15": "AUC@15 vs FP",
                    "fidelity_auc5": "AUC@5 vs FP", "fidelity_auc3": "AUC@3 vs FP",
                    "depth_rel_diff": "Δ depth (%)", "points_rel_diff": "Δ points (%)",
                    "rotation_diff_deg": "Δ rot. (°)", "calibration_seconds": "Time (s)"}
FIG5_KEYS = {"fidelity_auc5": ("AUC@5 vs FP", 1), "fidelity_auc3": ("AUC@3 vs FP", 1),
             "points_rel_diff": ("Δ points (%)", 3), "depth_rel_diff": ("Δ depth (%)", 3),
             "auc30": ("AUC@30", 2)}


def machine(threads: int) -> str:
    cpu = platform.processor() or platform.machine()
    return f"{platform.node()} {cpu}, {os.cpu_count()} CPUs, {threads} thread(s), torch {torch.__version__}"


def _running(claim: dict) -> bool:
    """Whether the process of a claim still runs (always assumed for another machine's claims)."""
    if claim.get("host") != platform.node():
        return True
    try:
        os.kill(claim["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def run_workers(settings: dict, out_dir, sections, workers: int, checkpoint: str | None = None,
                quick: bool = False, threads: int = 1) -> None:
    """``workers`` processes filling one results run at once (each entry made by one of them),
    then the markdown rendered from everything stored."""
    context = multiprocessing.get_context("spawn")  # no forked torch thread pools
    processes = [context.Process(target=_work, args=(settings, str(out_dir), list(sections),
                                                     checkpoint, quick, threads))
                 for _ in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    failed = [p.exitcode for p in processes if p.exitcode]
    if failed:
        raise SystemExit(f"{len(failed)} worker(s) failed (exit codes {failed}); run again to resume")


def _work(settings, out_dir, sections, checkpoint, quick, threads) -> None:
    torch.set_num_threads(threads)
    ResultsRun(settings, out_dir, checkpoint, quick, fresh=False, threads=threads).run(sections)


def now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


def quantize_and_evaluate(model, config, calibration, evaluate_model, progress: bool = False,
                          **quantize_options) -> dict:
    """Quantize ``model`` with ``config`` (and ``quantize_options``, e.g. resume_file) and score it:
    {"config", "calibration_seconds", "report", **evaluate_model(q_model)}. The one loop behind
    every table row."""
    tic = time.perf_counter()
    q_model = quantize(model, config, calibration=calibration, progress=progress, **quantize_options)
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
        if fresh:
            for path in (self.json_path, self.json_path.with_name(self.json_path.name + ".claims")):
                path.unlink(missing_ok=True)
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
        self._pool = self._features = None
        self._fp_predictions: dict[int, list[dict]] = {}
        self.lock = FileLock(str(self.json_path) + ".lock")

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

    def fp_predictions(self, first: int = 0) -> list[dict]:
        """The float model's predictions on the test scenes from ``first`` (the fidelity
        reference), once per scene set."""
        if first not in self._fp_predictions:
            s = self.settings
            count = s["scenes"] if first == 0 else s["heldout_scenes"]
            self._fp_predictions[first] = evaluate(
                self.model, num_scenes=count, num_frames=s["frames"], seed=first, baselines=False,
                progress=False, keep_predictions=True)["predictions"]
        return self._fp_predictions[first]

    def evaluate(self, model, frames=None, heldout: bool = False) -> dict:
        """Metrics on the test scenes 0.. (heldout: the held-out scenes after them); at the main
        frame count also fidelity to the float model."""
        s = self.settings
        first, count = (s["scenes"], s["heldout_scenes"]) if heldout else (0, s["scenes"])
        reference = self.fp_predictions(first) if frames is None and model is not self.model else None
        result = evaluate(model, num_scenes=count, num_frames=frames or s["frames"],
                          seed=first, baselines=False, progress=False, reference=reference)
        result.pop("per_scene")
        return result

    def fp_entry(self) -> dict:
        long = self.settings["long_frames"]
        return self.entry("fp", "fp", lambda: {"metrics": self.evaluate(self.model),
                                               f"metrics_{long}": self.evaluate(self.model, long),
                                               "metrics_heldout": self.evaluate(self.model, heldout=True)})

    def entry(self, section: str, key: str, make) -> dict | None:
        """The stored entry (made by this process or another), or make() it, stamp it and merge it
        into the JSON. None when another live process is making it now: the caller moves on.

        Whoever makes an entry first claims it in the side file ``results.json.claims`` (a claim
        of a process that no longer runs on this machine is taken over), all under the lock.
        """
        name = f"{section}/{key}"
        with self.lock:
            self.reload()
            if key in self.data.get(section, {}):
                return self.data[section][key]
            claims = self._claims()
            if name in claims and _running(claims[name]):
                return None
            self._write_claims({**claims, name: {"host": platform.node(), "pid": os.getpid()}})
        made = None
        try:
            print(f"[{section}] {key} ...", flush=True)
            tic = time.perf_counter()
            made = {**make(), "wall_seconds": time.perf_counter() - tic, "date": now(),
                    "machine": machine(self.threads)}
        finally:
            with self.lock:
                self._write_claims({k: v for k, v in self._claims().items() if k != name})
                if made is not None:
                    self.reload()
                    self.data.setdefault(section, {})[key] = made
                    if self.run_record not in self.data["runs"]:
                        self.data["runs"].append(self.run_record)
                    self.save()
        return made

    def _claims(self) -> dict:
        path = self.json_path.with_name(self.json_path.name + ".claims")
        return json.loads(path.read_text()) if path.is_file() else {}

    def _write_claims(self, claims: dict) -> None:
        path = self.json_path.with_name(self.json_path.name + ".claims")
        if claims:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(claims, indent=1) + "\n")
        else:
            path.unlink(missing_ok=True)

    def reload(self) -> None:
        """Take in the entries other processes have stored in the JSON since."""
        if self.json_path.is_file():
            stored = json.loads(self.json_path.read_text())
            for section, entries in stored.items():
                if isinstance(entries, dict) and section not in ("settings", "model"):
                    self.data.setdefault(section, {}).update(
                        {k: v for k, v in entries.items() if k not in self.data.get(section, {})})
            self.data["runs"] += [r for r in stored.get("runs", []) if r not in self.data["runs"]]

    def quantized_entry(self, config, pick: dict | None = None, frames=(None,),
                        heldout: bool = False) -> dict:
        """Quantize with config (calibration: self.calibration(**pick)), then evaluate (and, with
        heldout, score fidelity on the held-out scenes too)."""
        calibration = self.calibration(**(pick or {})) if config.needs_calibration else None

        def score(q_model):
            scores = {"metrics" if f is None else f"metrics_{f}": self.evaluate(q_model, f) for f in frames}
            return scores | ({"metrics_heldout": self.evaluate(q_model, heldout=True)} if heldout else {})

        return quantize_and_evaluate(self.model, config, calibration, score)

    def save(self):
        """Write the JSON and the markdown (each entry's caller holds the lock)."""
        self.json_path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.json_path.with_name(self.json_path.name + ".tmp")
        partial.write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        os.replace(partial, self.json_path)  # a reader sees the old file or the new one
        self.md_path.write_text(self.markdown())

    def markdown(self) -> str:
        """The markdown page of the stored entries."""
        return markdown(self.data, self.quick)

    def run(self, sections=SECTIONS) -> None:
        """The float entry, then every section named, in order (entries another process is
        making are left to it)."""
        self.fp_entry()
        for name in sections:
            SECTION_RUNNERS[name](self)
        with self.lock:
            self.reload()
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
            run.entry("table1", f"{method}/{bits}",
                      partial(run.quantized_entry, config, None, frames, heldout=True))


def run_rounding(run: ResultsRun):
    """QuantVGGT's weight rounding and clip initialisation (ROUNDING_VARIANTS), at equal epochs."""
    s = run.settings
    for bits in s["rounding_bits"]:
        for name, variant in ROUNDING_VARIANTS.items():
            config = QuantVGGTConfig(bits=bits, epochs=s["epochs"], **variant)
            run.entry("rounding", f"{name}/{bits}",
                      partial(run.quantized_entry, config, None, heldout=True))


def run_epochs(run: ResultsRun):
    """The default QuantVGGT W4A4 at each epoch count of the sweep: fidelity against time."""
    for epochs in run.settings["epochs_sweep"]:
        config = QuantVGGTConfig(bits="w4a4", epochs=epochs)
        run.entry("epochs", f"epochs{epochs}", partial(run.quantized_entry, config, None, heldout=True))


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


SECTION_RUNNERS = {"table1": run_table1, "rounding": run_rounding, "epochs": run_epochs,
                   "table4": run_table4, "fig5": run_fig5, "table10": run_table10,
                   "table11": run_table11}


# ----------------------------------------------------------------------------- markdown


def markdown(data: dict, quick: bool = False) -> str:
    """docs/results.md from the JSON store: the setup, then the tables of every section present."""
    s, cfg = data["settings"], data["model"]["config"]
    runs = "; ".join(f"{r['started']} on {r['machine']}" for r in data["runs"])
    setup = (
        f"Setup. Model: a tiny VGGT (the VGGT-1B architecture with {cfg['depth']} frame + "
        f"{cfg['depth']} global blocks of width {cfg['embed_dim']}, {cfg['img_size']} px), "
        f"{data['model']['source']}. Evaluation: the same {s['scenes']} rendered test scenes "
        f"(0..{s['scenes'] - 1}) x {s['frames']} frames for every row; Table 1, the rounding "
        f"variants and the epochs are re-checked on the held-out test scenes {_heldout(s)}. "
        f"Calibration: {s['calib_size']} of {s['pool']} calib-split scenes of {s['calib_frames']} "
        f"frames picked by NFDS (K = {s['clusters']}, p = 0.2) unless stated; QuantVGGT is the "
        f"project's default recipe (`QuantVGGTConfig()`) with {s['epochs']} epoch(s) per block "
        "unless stated. \"vs FP\" columns score fidelity: the quantized model against the float "
        "model's own outputs (pose AUCs with the float cameras as the truth; 100 = the same "
        "cameras); the others score accuracy against the rendered ground truth. The columns are "
        "defined in `docs/fidelity.md` and `docs/results-notes.md`, with what the numbers say.")
    kind = "--quick smoke run, random weights" if quick else "full run"
    lines = ["# Results: post-training quantization of the tiny VGGT", "",
             (f"Written by `scripts/run_results.py` ({kind}); machines and dates per entry are in "
              f"`results.json`. Runs: {runs}."), "", setup, ""]
    if data.get("fp", {}).get("fp") is not None:
        lines += [section_markdown(data, name) for name in SECTIONS if data.get(name)]
    return "\n".join(lines)


SECTION_TITLES = {
    "table1": "Table 1 analogue: methods x bits",
    "rounding": "QuantVGGT's weight rounding and clip initialisation (W8A8, W4A4)",
    "epochs": "Epochs per block (QuantVGGT W4A4): fidelity against calibration time",
    "table4": "Table 4 analogue: DSFQ ablation (W4A4)",
    "fig5": "Fig. 5 analogue: calibration pick (QuantVGGT W4A4), mean ± std over seeds",
    "table10": "Table 10 analogue: smoothing alpha (W4A4)",
    "table11": "Table 11 analogue: calibration size and K (W4A4)",
}
ROUNDING_NOTE = (
    "Same epochs and calibration for every row. \"paper\": every clip starts at sigmoid(4) = "
    "0.982, block inputs from the float model, weights rounded to nearest; \"clips_by_bits\": "
    "8-bit sides start unclipped; \"gptq\": GPTQ rounding in the rotated-and-smoothed space after "
    "each block's reconstruction; \"+quantized_inputs\": block inputs (and GPTQ's Hessians) from "
    "the already-quantized blocks; \"default\": all three, `QuantVGGTConfig()`.")


def section_markdown(data: dict, section: str) -> str:
    """One section of the results (a key of SECTION_TITLES) as markdown: its title and tables,
    every row against the float row of the same scenes."""
    s, fp = data["settings"], data["fp"]["fp"]
    entries = _in_run_order(section, data.get(section, {}), s)
    fidelity = {"auc30": "AUC@30", **FIDELITY_COLUMNS}

    def rows(metrics_key="metrics"):
        fp_row = {"method": "fp", "bits": "", "metrics": _flat(fp, s, metrics_key)}
        return [fp_row] + [{"method": "quantvggt" if section != "table1" else k.split("/")[0],
                            "bits": k.split("/")[1] if "/" in k else "w4a4",
                            "label": None if section == "table1" else k.split("/")[0],
                            "metrics": _flat(v, s, metrics_key)}
                           for k, v in entries.items() if metrics_key in v]

    heldout = f"Re-checked on the held-out test scenes {_heldout(s)}:"
    if section == "table1":
        long_column = {"auc30_long": f"AUC@30 ({s['long_frames']} fr.)"}
        parts = ["Accuracy against the ground truth:",
                 comparison_table(rows(), {**TABLE_COLUMNS, **long_column}, ("auc30", "depth_abs_rel")),
                 "Fidelity to the float model:", comparison_table(rows(), FIDELITY_COLUMNS, ()),
                 heldout, comparison_table(rows("metrics_heldout"), FIDELITY_COLUMNS, ())]
    elif section in ("rounding", "epochs"):
        parts = ([ROUNDING_NOTE] if section == "rounding" else []) + [
            comparison_table(rows(), fidelity, ("auc30",)), heldout,
            comparison_table(rows("metrics_heldout"), fidelity, ("auc30",))]
    elif section == "fig5":
        parts = [_fig5_table(entries, s),
                 "Welch's t-test of each pick against random (two-sided p; the seeds are the samples):",
                 _fig5_tests(entries, s)]
    else:
        parts = [comparison_table(rows(), {"auc30": "AUC@30", "depth_abs_rel": "AbsRel", **FIDELITY_COLUMNS})]
    return "\n\n".join([f"## {SECTION_TITLES[section]}", *parts]) + "\n"


def _in_run_order(section: str, entries: dict, s: dict) -> dict:
    """The entries in the order the section runner makes them (workers store them as they finish)."""
    order = {
        "table1": [f"{m}/{b}" for m in s["methods"] for b in s["bits"]],
        "rounding": [f"{v}/{b}" for b in s["rounding_bits"] for v in ROUNDING_VARIANTS],
        "epochs": [f"epochs{e}" for e in s["epochs_sweep"]],
        "table4": list(s["ablations"]),
        "fig5": [f"{p}/seed{seed}" for p in s["selections"] for seed in s["seeds"]],
        "table10": [f"alpha{a}" for a in s["alphas"]],
        "table11": [f"size{n}" for n in s["sizes"]] + [f"K{k}" for k in s["clusters_sweep"]],
    }[section]
    rank = {key: i for i, key in enumerate(order)}
    return dict(sorted(entries.items(), key=lambda kv: rank.get(kv[0], len(rank))))


def _heldout(s: dict) -> str:
    return f"{s['scenes']}..{s['scenes'] + s['heldout_scenes'] - 1}"


def _variant(key: str) -> str:
    return key.split("/")[0]


def fig5_samples(fig5: dict, selection: str, key: str) -> list[float]:
    """The per-seed values of ``key`` (a flat metrics key) for one calibration pick."""
    return [_flat(v, {})[key] for k, v in fig5.items() if k.startswith(selection + "/")]


def welch_test(a, b) -> tuple[float, float]:
    """(mean(a) - mean(b), two-sided p of Welch's unequal-variance t-test)."""
    result = stats.ttest_ind(a, b, equal_var=False)
    return float(np.mean(a) - np.mean(b)), float(result.pvalue)


def _fig5_table(fig5: dict, s: dict) -> str:
    header = ["Pick", "seeds", *(name for name, _ in FIG5_KEYS.values())]
    rows = []
    for selection in s["selections"]:
        samples = {key: fig5_samples(fig5, selection, key) for key in FIG5_KEYS}
        if samples["auc30"]:
            rows.append([selection, len(samples["auc30"]),
                         *(_mean_std(samples[key], digits) for key, (_, digits) in FIG5_KEYS.items())])
    return markdown_table(header, rows, right=[False] + [True] * (len(header) - 1))


def _fig5_tests(fig5: dict, s: dict) -> str:
    keys = ("fidelity_auc5", "points_rel_diff")
    header = ["Pick vs random", *(f"{FIG5_KEYS[k][0]}: difference, p" for k in keys)]
    rows = []
    for selection in s["selections"]:
        if selection == "random":
            continue
        cells = []
        for key in keys:
            a, b = fig5_samples(fig5, selection, key), fig5_samples(fig5, "random", key)
            if len(a) < 2 or len(b) < 2:
                cells.append("–")
                continue
            diff, p = welch_test(a, b)
            cells.append(f"{diff:+.{FIG5_KEYS[key][1]}f}, p = {p:.2f}")
        rows.append([selection, *cells])
    return markdown_table(header, rows, right=[False] + [True] * len(keys))


def _flat(entry: dict, s: dict, metrics_key: str = "metrics") -> dict:
    """One table row's numbers: the metrics (with fidelity flattened), AUC@30 at the long frame
    count where it was scored, and the calibration time."""
    long = entry.get(f"metrics_{s.get('long_frames')}")
    return {**with_fidelity(entry[metrics_key]),
            "auc30_long": None if long is None else long["auc30"],
            "calibration_seconds": entry.get("calibration_seconds")}


def _mean_std(values, digits: int) -> str:
    if not values or any(v is None for v in values):
        return "–"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1) if len(values) > 1 else 0.0:.{digits}f}"
