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

Resumable entry by entry (qvggt_lib/eval/results.py); a run with other settings refuses to mix
with the JSON it finds (use --fresh). --workers N runs N processes on the same JSON, each entry
made by one of them (on 2 cores: --workers 2 --threads 1).
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from qvggt_lib.eval.results import FULL, QUICK, SECTIONS, ResultsRun, run_workers


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
    parser.add_argument("--workers", type=int, default=1,
                        help="processes sharing the run, each with --threads threads")
    args = parser.parse_args()
    out_dir = args.out_dir or (tempfile.mkdtemp(prefix="qvggt-quick-") if args.quick else "docs")
    torch.set_num_threads(args.threads)
    settings = {**(QUICK if args.quick else FULL), "checkpoint": args.checkpoint, "quick": args.quick}
    run = ResultsRun(settings, out_dir, args.checkpoint, args.quick, args.fresh, args.threads)
    if args.workers > 1:
        run_workers(settings, out_dir, args.sections, args.workers, args.checkpoint, args.quick,
                    args.threads)
    run.run(args.sections)  # everything stored: only renders (and makes what a worker left)
    print(f"wrote {run.md_path} and {run.json_path}")


if __name__ == "__main__":
    main()
