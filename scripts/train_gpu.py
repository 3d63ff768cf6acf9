"""Train the tiny VGGT on one GPU inside a wall-clock budget (the recipe of the shipped model).

    python scripts/train_gpu.py --minutes 5 --out runs/gpu          # H100/H200
    python scripts/train_gpu.py --steps 8000 --out runs/gpu         # fixed length instead
    python scripts/train_gpu.py --device cpu --minutes 0.5 --frames-per-step 16 \\
        --workers 2 --prefill 16 --out /tmp/gpu-smoke               # CPU smoke run
    python scripts/train_gpu.py --join runs/gpu data/checkpoints/vggt-tiny.safetensors  # halves -> one file

The trainer lives in ``qvggt_lib.train.gpu`` (its docstring explains the ring bank and the
time budget); this script only reads the command line. Several runs may share one GPU (each
process is partly launch-bound, so they fill each other's gaps); the budget re-measuring
keeps each within its minutes.
"""

from __future__ import annotations

import argparse
import dataclasses

from qvggt_lib.train.gpu import DeviceTrainSettings, join_halves, train_on_device

HELP = {
    "minutes": "wall-clock training budget (rendering prefill excluded)",
    "steps": "fixed number of steps",
    "init_values": "LayerScale init (default: the model config's 0.01)",
    "init_from": "folder with weights_{0,1}.safetensors of an earlier run to start from",
    "workers": "render workers during training",
    "prefill": "scenes rendered before the first step",
    "bank": "most scenes kept on the device",
    "save_every": "seconds between weight saves",
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="output folder")
    p.add_argument("--join", nargs=2, metavar=("RUN_FOLDER", "CHECKPOINT"),
                   help="only write RUN_FOLDER's weight halves as one checkpoint file, then exit")
    budget = p.add_mutually_exclusive_group()
    for field in dataclasses.fields(DeviceTrainSettings):
        if field.name == "out":
            continue
        group = budget if field.name in ("minutes", "steps") else p
        kind = {"minutes": float, "steps": int, "init_values": float, "init_from": str}.get(field.name, type(field.default))
        group.add_argument("--" + field.name.replace("_", "-"), type=kind, default=field.default,
                           help=HELP.get(field.name))
    args = p.parse_args(argv)
    if args.join is None and (args.out is None or (args.minutes is None and args.steps is None)):
        p.error("training needs --out and one of --minutes / --steps (or use --join)")
    return args


def main(argv=None) -> None:
    args = vars(parse_args(argv))
    join = args.pop("join")
    if join:
        print(f"wrote {join_halves(*join)}")
        return
    train_on_device(DeviceTrainSettings(**args))


if __name__ == "__main__":
    main()
