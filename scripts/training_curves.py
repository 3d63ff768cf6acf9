"""Metrics and activation statistics of the tiny model along its training run (a script, not a test).

    python scripts/training_curves.py --run runs/tiny [--scenes 8] [--stat-scenes 4]

For every weight snapshot ``runs/tiny/snapshots/step_*.safetensors`` (and ``final``):
evaluates on the first ``--scenes`` test scenes, and measures activation statistics by
token type (``qvggt_lib.course.activations``) on ``--stat-scenes`` calibration scenes. Writes
``data/training_curve.json`` (metrics per step + the training loss log, thinned) and
``data/activation_stats.json`` (statistics per step; the checkpoints themselves are not
kept). Resumable: steps already in the JSON files are skipped.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch

from qvggt_lib.course.activations import activation_statistics
from qvggt_lib.data import render_split
from qvggt_lib.eval.evaluate import METRIC_KEYS, evaluate
from qvggt_lib.model import load_model

ROOT = Path(__file__).resolve().parents[1]


def snapshot_steps(run: Path) -> list[tuple[int, Path]]:
    return sorted((int(re.findall(r"\d+", p.stem)[0]), p) for p in (run / "snapshots").glob("step_*.safetensors"))


def load_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/tiny")
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--stat-scenes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    curve_path, stats_path = ROOT / "data" / "training_curve.json", ROOT / "data" / "activation_stats.json"
    curve, stats = load_json(curve_path), load_json(stats_path)
    curve.setdefault("eval", {})
    stats.setdefault("steps", {})
    curve["setup"] = {"test_scenes": args.scenes, "frames": args.frames, "split": "test", "seed": 0}
    stats["setup"] = {"calib_scenes": args.stat_scenes, "frames": args.frames, "split": "calib",
                      "note": "residual stream and linear-layer inputs of every aggregator block, per token type"}
    calib = [torch.from_numpy(render_split("calib", i, num_frames=args.frames)["images"]) for i in range(args.stat_scenes)]
    for step, path in snapshot_steps(run):
        key = str(step)
        model = load_model(path)
        if key not in curve["eval"]:
            result = evaluate(model, num_scenes=args.scenes, num_frames=args.frames, seed=0, progress=False)
            curve["eval"][key] = {k: result[k] for k in METRIC_KEYS}
            curve["baselines"] = result["baselines"]
            print(f"step {step}: " + ", ".join(f"{k}={curve['eval'][key][k]:.3f}" for k in METRIC_KEYS))
        if key not in stats["steps"]:
            stats["steps"][key] = activation_statistics(model, calib, progress=False)
        curve_path.write_text(json.dumps(curve, indent=1))
        stats_path.write_text(json.dumps(stats))
    log = run / "log.jsonl"
    if log.is_file():
        rows = [json.loads(line) for line in log.read_text().splitlines()]
        by_step = {r["step"]: r for r in rows}  # a resumed run rewrites some steps: keep the last
        curve["train_log"] = [
            {k: round(v, 5) if isinstance(v, float) else v for k, v in by_step[s].items()}
            for s in sorted(by_step) if s % 50 == 0
        ]
    curve_path.write_text(json.dumps(curve, indent=1))
    print(f"wrote {curve_path} and {stats_path}")


if __name__ == "__main__":
    main()
