"""The paper's Table 1 at full scale: VGGT-1B on Co3Dv2, FP / RTN / QuaRot / QuantVGGT x W8A8 / W4A4.

    python scripts/run_co3d_results.py --checkpoint model.pt --co3d-dir CO3D --co3d-anno-dir ANNO \\
        --out-dir runs/co3d --device cuda

Writes OUT_DIR/results.json (every row as soon as it is made: run the same command again to
resume) and OUT_DIR/results.md. CO3D is the Co3Dv2 root ({category}/{sequence}/images/...),
ANNO the {category}_{train,test}.jgz files of VGGT's preprocess_co3d.py (docs/co3d.md). Without
--checkpoint it runs the shipped tiny model (a dry run of the whole path; CI does that on a
rendered fixture). qvggt_lib/eval/co3d_results.py has the details.
"""

from __future__ import annotations

import argparse

import torch

from qvggt_lib.data.co3d import CO3D_CATEGORIES
from qvggt_lib.cli import check_device
from qvggt_lib.eval.co3d_results import CO3D_SETTINGS, Co3DResultsRun, co3d_settings
from qvggt_lib.quant.configs import BITS, METHODS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None,
                        help="the official VGGT-1B model.pt / model.safetensors (default: the shipped tiny model)")
    parser.add_argument("--co3d-dir", required=True, help="Co3Dv2 root")
    parser.add_argument("--co3d-anno-dir", required=True, help="folder of {category}_{split}.jgz")
    parser.add_argument("--out-dir", required=True, help="results.json and results.md go here")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    parser.add_argument("--fresh", action="store_true", help="ignore and overwrite stored rows")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=CO3D_SETTINGS["methods"])
    parser.add_argument("--bits", nargs="+", choices=BITS, default=CO3D_SETTINGS["bits"])
    parser.add_argument("--categories", nargs="+", choices=CO3D_CATEGORIES, default=None,
                        help="a subset of the 41 categories (default: all)")
    for name in ("frames", "min_frames", "max_sequences", "seed", "pool", "calib_size", "calib_frames",
                 "clusters", "calib_min_frames", "epochs"):
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=CO3D_SETTINGS[name],
                            help=f"default {CO3D_SETTINGS[name]} (qvggt_lib/eval/co3d_results.py)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = co3d_settings(**{key: getattr(args, key) for key in CO3D_SETTINGS})
    settings["checkpoint"] = args.checkpoint
    run = Co3DResultsRun(settings, args.out_dir, args.co3d_dir, args.co3d_anno_dir, args.checkpoint,
                         device=check_device(args.device), fresh=args.fresh, threads=args.threads)
    run.run()
    print(f"wrote {run.md_path} and {run.json_path}")


if __name__ == "__main__":
    main()
