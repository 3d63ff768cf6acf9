"""``qvggt`` command line: demo, train, eval (more subcommands join as the library grows)."""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch


def cmd_demo(args) -> int:
    """Forward pass of a model on a synthetic (or rendered) input; prints shapes and timings."""
    from .model import build_vggt

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = build_vggt(args.model, seed=args.seed).eval()
    size = model.config.img_size if args.image_size is None else args.image_size
    images = torch.rand(args.frames, 3, size, size, generator=torch.Generator().manual_seed(args.seed))
    params = sum(p.numel() for p in model.parameters())
    print(f"model {args.model}: {params / 1e6:.2f}M parameters, input {tuple(images.shape)}")
    with torch.inference_mode():
        model(images)  # warm-up
        times = []
        for _ in range(args.repeats):
            tic = time.perf_counter()
            out = model(images)
            times.append(time.perf_counter() - tic)
    for key, value in out.items():
        if isinstance(value, torch.Tensor):
            print(f"  {key:18s} {tuple(value.shape)}")
    print(f"forward: median {sorted(times)[len(times) // 2] * 1e3:.1f} ms over {args.repeats} runs "
          f"({args.threads} threads)")
    return 0


def cmd_train(args) -> int:
    from .train.trainer import TrainConfig, train

    overrides = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__ and v is not None}
    overrides["model"] = args.config
    path = train(TrainConfig(**overrides), resume=not args.no_resume)
    print(f"saved {path}")
    return 0


def _load_for_eval(args):
    """The model to evaluate and its row label: ``--checkpoint`` (a save_checkpoint file) wins over
    ``--model`` (a shipped pretrained name). Extend here for other checkpoint formats."""
    from pathlib import Path

    from .model import CheckpointError, load_model, load_pretrained

    try:
        if args.checkpoint is not None:
            path = Path(args.checkpoint)
            if not path.is_file():
                raise FileNotFoundError(f"checkpoint {path} does not exist")
            return load_model(path), path.stem
        return load_pretrained(args.model), args.model
    except CheckpointError as exc:
        raise ValueError(str(exc)) from exc


def cmd_eval(args) -> int:
    """Evaluate a model on rendered test scenes; print a markdown table (model + baselines)."""
    from .evaluate import evaluate, format_table, save_json

    torch.set_num_threads(args.threads)
    model, label = _load_for_eval(args)
    results = evaluate(model, num_scenes=args.scenes, num_frames=args.frames, seed=args.seed,
                       split=args.split, image_size=args.image_size, progress=not args.no_progress,
                       baselines=not args.no_baselines)
    print(f"{label}: {results['num_scenes']} {results['split']} scenes (indices {args.seed}.."
          f"{args.seed + args.scenes - 1}) x {results['num_frames']} frames at {results['image_size']} px")
    print(format_table({label: results}))
    if args.json is not None:
        print(f"wrote {save_json({'model': label, **results}, args.json)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qvggt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="forward pass on a synthetic input: output shapes and timing")
    demo.add_argument("--model", default="tiny", help="config name: tiny or vggt-1b")
    demo.add_argument("--frames", type=int, default=8)
    demo.add_argument("--image-size", type=int, default=None)
    demo.add_argument("--repeats", type=int, default=3)
    demo.add_argument("--threads", type=int, default=2)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=cmd_demo)

    tr = sub.add_parser("train", help="train a model on rendered scenes (resumable)")
    tr.add_argument("--config", default="tiny")
    tr.add_argument("--steps", type=int)
    tr.add_argument("--frames-per-step", dest="frames_per_step", type=int)
    tr.add_argument("--min-frames", dest="min_frames", type=int)
    tr.add_argument("--max-frames", dest="max_frames", type=int)
    tr.add_argument("--lr", type=float)
    tr.add_argument("--warmup-steps", dest="warmup_steps", type=int)
    tr.add_argument("--decay-fraction", dest="decay_fraction", type=float)
    tr.add_argument("--seed", type=int)
    tr.add_argument("--camera-weight", dest="camera_weight", type=float)
    tr.add_argument("--arc-start-deg", dest="arc_start_deg", type=float)
    tr.add_argument("--arc-end-deg", dest="arc_end_deg", type=float)
    tr.add_argument("--arc-ramp-start", dest="arc_ramp_start", type=int)
    tr.add_argument("--arc-ramp-end", dest="arc_ramp_end", type=int)
    tr.add_argument("--out-dir", dest="out_dir")
    tr.add_argument("--threads", type=int)
    tr.add_argument("--no-resume", action="store_true", help="start from scratch even if a checkpoint exists")
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="pose / depth / point metrics on rendered test scenes, with baselines")
    ev.add_argument("--model", default="tiny", help="shipped pretrained name (tiny)")
    ev.add_argument("--checkpoint", default=None, help="a file written by save_checkpoint (overrides --model)")
    ev.add_argument("--scenes", type=int, default=32)
    ev.add_argument("--frames", type=int, default=8)
    ev.add_argument("--seed", type=int, default=0,
                    help="first scene index; scenes seed..seed+scenes-1 (multiples of --scenes are disjoint)")
    ev.add_argument("--split", default="test")
    ev.add_argument("--image-size", dest="image_size", type=int, default=None,
                    help="default: the model's img_size")
    ev.add_argument("--json", default=None, help="also write the results to this JSON file")
    ev.add_argument("--threads", type=int, default=2)
    ev.add_argument("--no-baselines", dest="no_baselines", action="store_true")
    ev.add_argument("--no-progress", dest="no_progress", action="store_true")
    ev.set_defaults(func=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
