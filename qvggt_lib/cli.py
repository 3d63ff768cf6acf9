"""``qvggt`` command line: demo, train, eval, predict, quantize, table, bench."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

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


def check_device(name: str) -> str:
    """``name`` if torch can use that device here, else a clear error (before any work)."""
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"--device {name!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name!r} asked, but torch sees no CUDA GPU here; use --device cpu")
    return name


def _load_for_eval(args):
    """The model to evaluate and its row label: ``--checkpoint`` (a save_checkpoint or a
    save_quantized file, told apart by its metadata) wins over ``--model`` (a shipped name)."""
    model, label = _load_named_or_file(args.model if args.checkpoint is None else args.checkpoint,
                                       is_file=args.checkpoint is not None)
    return model.to(check_device(args.device)), label


def _load_named_or_file(name_or_path: str, is_file: bool | None = None):
    """A shipped pretrained name, or a float / quantized / deployed checkpoint file, and its label;
    ``is_file=None``: a shipped name if there is one of that name, else a file."""
    from .model import CheckpointError, load_pretrained
    from .model.checkpoint import PRETRAINED
    from .quant.serialization import load_any

    if is_file is None:
        is_file = name_or_path not in PRETRAINED
    try:
        if is_file:
            path = Path(name_or_path)
            if not path.is_file():
                raise FileNotFoundError(f"checkpoint {path} does not exist "
                                        f"(nor is it a shipped model: {', '.join(sorted(PRETRAINED))})")
            return load_any(path), path.stem
        return load_pretrained(name_or_path), name_or_path
    except CheckpointError as exc:
        raise ValueError(str(exc)) from exc


def _load_float(args):
    """The float model to quantize, on --device: ``--checkpoint`` (the official model.pt or a
    save_checkpoint file) or ``--model``."""
    from .model import CheckpointError, load_model, load_pretrained

    device = check_device(args.device)
    try:
        if args.checkpoint is not None:
            if not Path(args.checkpoint).is_file():
                raise FileNotFoundError(f"checkpoint {args.checkpoint} does not exist")
            return load_model(args.checkpoint, device=device)
        return load_pretrained(args.model, device=device)
    except CheckpointError as exc:
        raise ValueError(str(exc)) from exc


def _calibration_pool(args, model):
    """The NFDS candidates: Co3D training sequences (--calib-co3d-dir), your image folders
    (--calib-images), or None: rendered calib-split scenes."""
    from .data.co3d import co3d_calibration_pool
    from .data.image_folders import image_folder_pool

    if args.calib_images is not None and args.calib_co3d_dir is not None:
        raise ValueError("give --calib-images or --calib-co3d-dir, not both")
    if (args.calib_co3d_dir is None) != (args.calib_co3d_anno_dir is None):
        raise ValueError("--calib-co3d-dir and --calib-co3d-anno-dir go together")
    if args.calib_co3d_dir is not None:
        pool = co3d_calibration_pool(args.calib_co3d_dir, args.calib_co3d_anno_dir, args.calib_categories,
                                     args.calib_pool, args.calib_frames, model.config.img_size, seed=args.seed,
                                     min_frames=args.calib_min_frames)
        return pool, f"{len(pool)} Co3D training sequences"
    if args.calib_images is None:
        return None, f"{args.calib_pool} calib-split scenes"
    pool = image_folder_pool(args.calib_images, args.calib_frames, model.config.img_size)
    if len(pool) < args.calib_size:
        raise ValueError(f"--calib-images {args.calib_images} gives {len(pool)} calibration candidates "
                         f"(each scene folder gives one per {args.calib_frames} images), fewer than "
                         f"--calib-size {args.calib_size}: add scenes or lower --calib-size")
    return pool, f"{len(pool)} candidates from {args.calib_images}"


def _calibration(args, model, configs):
    """Calibration scenes picked from the pool when any config needs them, else None."""
    from .quant.sampling import SamplingConfig, calibration_scenes

    if not any(config.needs_calibration for config in configs):
        return None
    tic = time.perf_counter()
    pool, source = _calibration_pool(args, model)
    sampling = SamplingConfig(args.calib, args.calib_size, args.calib_pool if pool is None else len(pool),
                              args.calib_frames, seed=args.seed, num_clusters=args.calib_clusters)
    scenes = calibration_scenes(model, sampling, pool=pool, progress=not args.no_progress)
    print(f"calibration: {len(scenes)} {args.calib} scenes of {args.calib_frames} frames from a "
          f"pool of {source} ({time.perf_counter() - tic:.1f}s)")
    return scenes


def _method_config(args, method: str, bits: str, quantvggt_only: bool = False):
    """The config of ``method`` at ``bits`` with the command's seed and QuantVGGT options (--recipe,
    --epochs, --weight-rounding); quantvggt_only: other methods ignore those options."""
    from .quant.configs import QuantVGGTConfig, make_config

    options = {key: value for key, value in (("epochs", args.epochs),
                                             ("weight_rounding", args.weight_rounding))
               if value is not None}
    if method != "quantvggt" and (quantvggt_only or args.recipe == "default"):
        return make_config(method, bits, seed=args.seed, **({} if quantvggt_only else options))
    if method != "quantvggt":
        raise ValueError(f"--recipe {args.recipe} applies to quantvggt, not to {method!r}")
    base = QuantVGGTConfig.paper() if args.recipe == "paper" else method
    return make_config(base, bits, seed=args.seed, **options)


def cmd_quantize(args) -> int:
    """Quantize a float model with one method and save it (safetensors + metadata)."""
    from .quant.api import quantize
    from .quant.serialization import save_quantized

    torch.set_num_threads(args.threads)
    config = _method_config(args, args.method, args.bits)
    model = _load_float(args)
    calibration = _calibration(args, model, [config])
    # QuantVGGT's block calibration can take hours on VGGT-1B: record each block beside the output
    resume = Path(f"{args.out}.calibration-progress") if config.method == "quantvggt" else None
    if resume is not None and resume.exists():
        print(f"resuming the block calibration from {resume}")
    tic = time.perf_counter()
    try:
        q_model = quantize(model, config, calibration=calibration, progress=not args.no_progress,
                           **({} if resume is None else {"resume_file": resume}))
    except KeyboardInterrupt:
        if resume is not None and resume.exists():
            raise KeyboardInterrupt(f"the finished blocks are kept in {resume}: run the same command "
                                    "again to resume") from None
        raise
    print(f"quantized in {time.perf_counter() - tic:.1f}s")
    print(q_model.quant_report.summary())
    print(f"wrote {save_quantized(q_model, args.out)}")
    if resume is not None:
        resume.unlink(missing_ok=True)
    return 0


def cmd_table(args) -> int:
    """Evaluate FP and every method x bits on the same scenes; print a Table-1-style markdown."""
    from .eval.evaluate import evaluate, save_json
    from .eval.results import quantize_and_evaluate
    from .eval.tables import METHOD_NAMES, comparison_table, fidelity_table

    torch.set_num_threads(args.threads)
    configs = [_method_config(args, method, bits, quantvggt_only=True)
               for method in args.methods for bits in args.bits]
    model = _load_float(args)
    calibration = _calibration(args, model, configs)
    settings = {"num_scenes": args.scenes, "num_frames": args.frames, "seed": args.eval_seed,
                "progress": not args.no_progress, "baselines": False}
    float_metrics = evaluate(model, **settings, keep_predictions=True)
    reference = float_metrics.pop("predictions")  # the float model's outputs: the fidelity reference
    rows = [{"method": "fp", "bits": "w16a16", "metrics": float_metrics}]
    for config in configs:
        row = quantize_and_evaluate(model, config, calibration,
                                    lambda q_model: {"metrics": evaluate(q_model, **settings, reference=reference)},
                                    progress=not args.no_progress)
        rows.append({"method": config.method, "bits": config.bits,
                     "quantize_seconds": row["calibration_seconds"], "metrics": row["metrics"]})
        print(f"{config.method} {config.bits}: quantized in {row['calibration_seconds']:.1f}s, "
              f"AUC@30 {row['metrics']['auc30']:.1f}")
    print(f"{args.scenes} test scenes x {args.frames} frames; calibration: {args.calib}, "
          f"{args.calib_size} of {args.calib_pool}; retention = Q / FP x 100 (AUC), "
          "FP / Q x 100 (AbsRel: lower is better)")
    print(comparison_table(rows))
    print("\n" + fidelity_table({f"{METHOD_NAMES[r['method']]} {r['bits'].upper()}": r["metrics"] for r in rows[1:]},
                                 "FP"))
    if args.json is not None:
        for row in rows:
            row["metrics"].pop("per_scene", None)
        print(f"wrote {save_json({'rows': rows, 'args': vars(args) | {'func': None}}, args.json)}")
    return 0


def _add_quant_arguments(parser) -> None:
    parser.add_argument("--model", default="tiny", help="shipped pretrained name (tiny)")
    parser.add_argument("--checkpoint", default=None,
                        help="a float model written by save_checkpoint (overrides --model)")
    parser.add_argument("--calib", default="nfds",  # checked by quant.sampling (no sklearn here)
                        help="calibration pick: random, filtered, clustered or nfds (default)")
    parser.add_argument("--calib-size", dest="calib_size", type=POSITIVE, default=40,
                        help="calibration scenes to pick")
    parser.add_argument("--calib-pool", dest="calib_pool", type=POSITIVE, default=400,
                        help="candidate calib-split scenes to pick from")
    parser.add_argument("--calib-clusters", dest="calib_clusters", type=POSITIVE, default=8,
                        help="NFDS k-means clusters K (the paper's 8; at most the candidates left by "
                             "the noise filter)")
    parser.add_argument("--calib-images", dest="calib_images", default=None,
                        help="calibrate on your own scenes: a folder of image folders (one scene each; "
                             "each gives one candidate per --calib-frames images) instead of rendered ones")
    parser.add_argument("--calib-frames", dest="calib_frames", type=POSITIVE, default=8,
                        help="frames per calibration scene")
    parser.add_argument("--calib-co3d-dir", dest="calib_co3d_dir", default=None,
                        help="calibrate on Co3D training sequences (the paper's pool): the Co3Dv2 root; "
                             "--calib-pool of them, --calib-frames random frames each")
    parser.add_argument("--calib-co3d-anno-dir", dest="calib_co3d_anno_dir", default=None,
                        help="the {category}_train.jgz files for --calib-co3d-dir")
    parser.add_argument("--calib-categories", dest="calib_categories", nargs="+", default=None,
                        help="Co3D categories of the pool (default: all 41)")
    parser.add_argument("--calib-min-frames", dest="calib_min_frames", type=POSITIVE, default=50,
                        help="Co3D pool: only sequences with at least this many frames")
    parser.add_argument("--seed", type=NON_NEGATIVE, default=0,
                        help="seeds the calibration pool and pick and the Hadamard rotations")
    parser.add_argument("--epochs", type=NON_NEGATIVE, default=None,
                        help="QuantVGGT block-calibration epochs (default: the recipe's)")
    parser.add_argument("--recipe", default="default", choices=("default", "paper"),
                        help="QuantVGGT: the project's default (QuantVGGTConfig()) or the paper's "
                             "exact recipe (QuantVGGTConfig.paper(): 15 epochs, clips from "
                             "sigmoid(4), round to nearest)")
    parser.add_argument("--weight-rounding", dest="weight_rounding", default=None,
                        choices=("rtn", "gptq"),
                        help="QuantVGGT: rtn, or gptq in the rotated-and-smoothed space after each "
                             "block's reconstruction (default: the recipe's)")
    parser.add_argument("--device", default="cpu", help="torch device for calibration and evaluation (cpu, cuda)")
    parser.add_argument("--threads", type=POSITIVE, default=2, help="CPU threads for torch")
    parser.add_argument("--no-progress", dest="no_progress", action="store_true", help="no progress bars")


DATA_FRAMES = {"rendered": 8, "co3d": 10}  # --frames default per --data (the paper's 10 for Co3D)


def _check_data_options(args) -> None:
    """Each --data needs its folders; options of another data are refused, not ignored."""
    needs = {"co3d": ("co3d_dir", "co3d_anno_dir"), "7scenes": ("data_dir",), "nrgbd": ("data_dir",)}
    missing = [f"--{name.replace('_', '-')}" for name in needs.get(args.data, ()) if getattr(args, name) is None]
    if missing:
        raise ValueError(f"--data {args.data} needs {' and '.join(missing)}")
    foreign = {"rendered": ("co3d_dir", "co3d_anno_dir", "categories", "max_sequences", "data_dir", "kf_every"),
               "co3d": ("data_dir", "kf_every", "scene_names", "split"),
               "7scenes": ("co3d_dir", "co3d_anno_dir", "categories", "frames", "split"),
               "nrgbd": ("co3d_dir", "co3d_anno_dir", "categories", "frames", "split")}[args.data]
    given = [f"--{name.replace('_', '-')}" for name in foreign if getattr(args, name) is not None]
    if given:
        raise ValueError(f"{', '.join(given)}: not used with --data {args.data}; leave out what belongs "
                         "to other data")


def _evaluate_data(args, model, **options) -> dict:
    """The model on the data --data names (rendered scenes, Co3D or 7-Scenes / NRGBD sequences)."""
    from .eval.co3d import evaluate_co3d
    from .eval.evaluate import evaluate
    from .eval.pointcloud import evaluate_pointclouds

    size, progress = args.image_size or model.config.img_size, not args.no_progress
    if args.data == "rendered":
        return evaluate(model, num_scenes=args.scenes, num_frames=args.frames or DATA_FRAMES["rendered"],
                        seed=args.seed, split=args.split or "test", image_size=size, progress=progress, **options)
    options.pop("baselines", None)  # the trivial baselines are defined on rendered scenes
    if args.data == "co3d":
        return evaluate_co3d(model, args.co3d_dir, args.co3d_anno_dir, args.categories,
                             args.frames or DATA_FRAMES["co3d"], args.min_frames, args.seed, size,
                             progress=progress, max_sequences=args.max_sequences, **options)
    return evaluate_pointclouds(model, args.data, args.data_dir, args.scene_names, args.kf_every, size,
                                progress=progress, max_sequences=args.max_sequences, **options)


def _describe_data(args, results: dict) -> str:
    if args.data == "rendered":
        return (f"{results['num_scenes']} {results['split']} scenes (indices {args.seed}.."
                f"{args.seed + args.scenes - 1}) x {results['num_frames']} frames at {results['image_size']} px")
    if args.data == "co3d":
        return (f"Co3Dv2, {results['num_sequences']} test sequences of {len(results['categories'])} categories "
                f"x {results['num_frames']} frames at {results['image_size']} px "
                f"({results['num_skipped']} too short, skipped)")
    return (f"{args.data}, {results['num_sequences']} test sequences, a keyframe every {results['kf_every']} "
            f"frames, at {results['image_size']} px")


def cmd_eval(args) -> int:
    """Evaluate a model on rendered scenes, Co3D or 7-Scenes / NRGBD; print a markdown table."""
    from .eval.co3d import METRIC_KEYS as CO3D_KEYS
    from .eval.evaluate import save_json
    from .eval.pointcloud import METRIC_KEYS as POINTCLOUD_KEYS
    from .eval.tables import fidelity_table, format_table

    _check_data_options(args)
    torch.set_num_threads(args.threads)
    model, label = _load_for_eval(args)
    reference = None  # the reference model sees the same scenes at the same size
    if args.reference is not None:
        reference_model, reference_label = _load_named_or_file(args.reference)
        reference_model.to(args.device)
        if args.image_size is None and reference_model.config.img_size != model.config.img_size:
            raise ValueError(f"--reference has img_size {reference_model.config.img_size}, the model "
                             f"{model.config.img_size}: set --image-size so both see the same pixels")
        reference = _evaluate_data(args, reference_model, baselines=False, keep_predictions=True)["predictions"]
    results = _evaluate_data(args, model, baselines=not args.no_baselines, reference=reference)
    print(f"{label}: {_describe_data(args, results)}")
    keys = {"co3d": CO3D_KEYS, "7scenes": POINTCLOUD_KEYS, "nrgbd": POINTCLOUD_KEYS}.get(args.data)
    print(format_table({label: results}) if keys is None else format_table({label: results}, keys))
    if reference is not None:
        print(f"\n{fidelity_table({label: results}, reference_label)}")
    if args.json is not None:
        print(f"wrote {save_json({'model': label, **results}, args.json)}")
    return 0


def _per_scene(path, scene: str) -> Path:
    """``preds.npz`` -> ``preds_<scene>.npz``: one file per scene when a folder holds several."""
    path = Path(path)
    return path.with_name(f"{path.stem}_{scene}{path.suffix}")


def cmd_predict(args) -> int:
    """Run a model on your own images: every output in a .npz, a coloured point cloud in a .ply."""
    from .data.image_folders import image_scenes
    from .eval.evaluate import predict_scene
    from .export import colored_points, save_predictions, write_ply
    from .io import load_and_preprocess_images

    torch.set_num_threads(args.threads)
    scenes = image_scenes(args.images)  # a bad folder fails before the model loads
    model, label = _load_for_eval(args)
    size = args.image_size or model.config.img_size
    several = len(scenes) > 1
    print(f"{label} on {len(scenes)} scene(s) from {args.images}, {args.mode} mode at {size} px")
    for name, paths in scenes.items():
        images = load_and_preprocess_images(paths, mode=args.mode, size=size)
        pred = predict_scene(model, images)
        out = save_predictions(pred, images, _per_scene(args.out, name) if several else args.out, paths)
        line = f"{name}: {len(paths)} images, {images.shape[-2]}x{images.shape[-1]} -> {out}"
        if args.ply is not None:
            points, colors = colored_points(pred, images, args.points, args.keep)
            ply = write_ply(_per_scene(args.ply, name) if several else args.ply, points, colors)
            line += f", {len(points)} points ({args.points} branch) -> {ply}"
        print(line)
    return 0


def cmd_bench(args) -> int:
    """Time the deployed aggregator (fp32, bf16, W8A8, W4A8, W4A4) on this machine's CPU (or GPU)."""
    from .deploy.bench import BenchSettings, breakdown_table, run, shape_table, table

    torch.set_num_threads(args.threads)
    frames = args.frames or ([1] if args.model == "vggt-1b" else [8])
    settings = BenchSettings(frames=frames, schemes=args.schemes, warmup=args.warmup, iters=args.iters,
                             config=args.model, depth=args.depth, device=args.device)
    print(f"{args.model} aggregator with random weights (right for speed, meaningless for accuracy), "
          f"{args.threads} thread(s); timing, then the shapes and one block's breakdown", flush=True)
    results = run(settings, args.json, shapes=not args.no_shapes, breakdown=not args.no_shapes)
    print(table(results))
    if results["shapes"]:
        print(f"\nper linear shape, ms (the GEMM alone in parentheses):\n\n{shape_table(results)}")
    if results["breakdown"]:
        print(f"\none frame block, ms (share of the block):\n\n{breakdown_table(results)}")
    if args.json is not None:
        print(f"wrote {args.json}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``error: ...`` on stderr and exit code 2."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


POSITIVE, NON_NEGATIVE = _int_at_least(1), _int_at_least(0)


def _check_creatable(path: Path, option: str) -> None:
    """The first existing folder at or above ``path`` must be writable (the rest get created)."""
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: cannot create files under {existing}; choose a writable folder")


def check_output_file(path, option: str) -> Path:
    """Fail before any work if ``path`` cannot be written: a directory, or a folder we may not write."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path} is a directory; give a file name, e.g. {path / 'out.safetensors'}")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{option} {path} exists and is not writable; choose another path")
    if not path.exists():
        _check_creatable(path.parent, option)
    return path


def check_output_dir(path, option: str) -> Path:
    """Fail before any work if ``path`` cannot become a folder we write into."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path} is a file, not a folder; choose a folder path")
    _check_creatable(path, option)
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="qvggt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    defaults = {"formatter_class": argparse.ArgumentDefaultsHelpFormatter}

    demo = sub.add_parser("demo", help="forward pass on a synthetic input: output shapes and timing", **defaults)
    demo.add_argument("--model", default="tiny", help="config name: tiny or vggt-1b")
    demo.add_argument("--frames", type=POSITIVE, default=8, help="frames (views) of the synthetic scene")
    demo.add_argument("--image-size", type=POSITIVE, default=None,
                      help="square image side in pixels, a multiple of 14 (default: the model's img_size)")
    demo.add_argument("--repeats", type=POSITIVE, default=3, help="timed forward passes after one warm-up")
    demo.add_argument("--threads", type=POSITIVE, default=2, help="CPU threads for torch")
    demo.add_argument("--seed", type=NON_NEGATIVE, default=0, help="seeds the random weights and images")
    demo.set_defaults(func=cmd_demo)

    tr = sub.add_parser("train", help="train a model on rendered scenes (resumable); options left out take "
                                      "TrainConfig's defaults", **defaults)
    tr.add_argument("--config", default="tiny", help="model configuration: tiny or vggt-1b")
    tr.add_argument("--steps", type=POSITIVE, help="optimizer steps in all")
    tr.add_argument("--frames-per-step", dest="frames_per_step", type=POSITIVE, help="frames in one batch")
    tr.add_argument("--min-frames", dest="min_frames", type=POSITIVE, help="fewest frames per scene")
    tr.add_argument("--max-frames", dest="max_frames", type=POSITIVE, help="most frames per scene")
    tr.add_argument("--lr", type=float, help="peak learning rate")
    tr.add_argument("--warmup-steps", dest="warmup_steps", type=NON_NEGATIVE, help="linear warm-up steps")
    tr.add_argument("--decay-fraction", dest="decay_fraction", type=float,
                    help="fraction of the steps spent decaying the learning rate to 0")
    tr.add_argument("--seed", type=NON_NEGATIVE, help="seeds the weights and the scene order")
    tr.add_argument("--init-values", dest="init_values", type=float, help="LayerScale init (model config)")
    tr.add_argument("--camera-weight", dest="camera_weight", type=float, help="weight of the camera loss")
    tr.add_argument("--arc-start-deg", dest="arc_start_deg", type=float, help="camera arc at the start (degrees)")
    tr.add_argument("--arc-end-deg", dest="arc_end_deg", type=float, help="camera arc at the end (degrees)")
    tr.add_argument("--arc-ramp-start", dest="arc_ramp_start", type=NON_NEGATIVE, help="step the arc starts growing")
    tr.add_argument("--arc-ramp-end", dest="arc_ramp_end", type=NON_NEGATIVE, help="step the arc reaches its end")
    tr.add_argument("--out-dir", dest="out_dir", help="folder for checkpoints and logs")
    tr.add_argument("--threads", type=POSITIVE, help="CPU threads for torch")
    tr.add_argument("--no-resume", action="store_true", help="start from scratch even if a checkpoint exists")
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="pose / depth / point metrics on rendered scenes (with baselines), "
                                     "Co3Dv2 (the paper's Table 1) or 7-Scenes / NRGBD (Table 3)", **defaults)
    ev.add_argument("--model", default="tiny", help="shipped pretrained name (tiny)")
    ev.add_argument("--checkpoint", default=None,
                    help="the official model.pt / model.safetensors, or a float, quantized or deployed file "
                         "of ours (overrides --model)")
    ev.add_argument("--data", default="rendered", choices=("rendered", "co3d", "7scenes", "nrgbd"),
                    help="what to evaluate on")
    ev.add_argument("--scenes", type=POSITIVE, default=32, help="rendered: scenes to evaluate on")
    ev.add_argument("--frames", type=POSITIVE, default=None,
                    help="frames (views) per scene: rendered 8, co3d 10 (random per sequence)")
    ev.add_argument("--seed", type=NON_NEGATIVE, default=0,
                    help="rendered: first scene index (scenes seed..seed+scenes-1; multiples of --scenes are "
                         "disjoint); co3d: the seed of the frame draw")
    ev.add_argument("--split", default=None, help="rendered split: train, calib or test (default test)")
    ev.add_argument("--co3d-dir", dest="co3d_dir", default=None, help="co3d: the Co3Dv2 root")
    ev.add_argument("--co3d-anno-dir", dest="co3d_anno_dir", default=None,
                    help="co3d: the {category}_test.jgz files of VGGT's preprocess_co3d.py (docs/co3d.md)")
    ev.add_argument("--categories", nargs="+", default=None, help="co3d: a subset of the 41 categories")
    ev.add_argument("--min-frames", dest="min_frames", type=POSITIVE, default=50,
                    help="co3d: sequences with fewer frames are skipped (the protocol's 50)")
    ev.add_argument("--data-dir", dest="data_dir", default=None,
                    help="7scenes / nrgbd: the dataset root in its public layout (docs/pointcloud_eval.md)")
    ev.add_argument("--scene-names", dest="scene_names", nargs="+", default=None,
                    help="7scenes / nrgbd: a subset of the scenes")
    ev.add_argument("--kf-every", dest="kf_every", type=POSITIVE, default=None,
                    help="7scenes / nrgbd: one keyframe every N frames (default: the protocol's)")
    ev.add_argument("--max-sequences", dest="max_sequences", type=POSITIVE, default=None,
                    help="co3d: at most N test sequences per category; 7scenes / nrgbd: the first N (quick runs)")
    ev.add_argument("--image-size", dest="image_size", type=POSITIVE, default=None,
                    help="default: the model's img_size")
    ev.add_argument("--reference", default=None,
                    help="also score fidelity to this model (a shipped name or a checkpoint file): pose AUCs "
                         "with its cameras as the truth, and depth / point / rotation differences")
    ev.add_argument("--json", default=None, help="also write the results to this JSON file")
    ev.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    ev.add_argument("--threads", type=POSITIVE, default=2, help="CPU threads for torch")
    ev.add_argument("--no-baselines", dest="no_baselines", action="store_true",
                    help="rendered: skip the trivial baselines' rows")
    ev.add_argument("--no-progress", dest="no_progress", action="store_true", help="no progress bars")
    ev.set_defaults(func=cmd_eval)

    from .quant.configs import BITS, METHODS

    qu = sub.add_parser("quantize", help="quantize a float model (rtn, smoothquant, gptq, quarot, "
                                         "quantvggt) and save it", **defaults)
    _add_quant_arguments(qu)
    qu.add_argument("--method", required=True, help=f"one of {', '.join(METHODS)}")
    qu.add_argument("--bits", default="w4a4", help=f"one of {', '.join(BITS)}")
    qu.add_argument("--out", required=True, help="output .safetensors file")
    qu.set_defaults(func=cmd_quantize)

    tb = sub.add_parser("table", help="FP vs methods x bits on the same test scenes (Table 1)", **defaults)
    _add_quant_arguments(tb)
    tb.add_argument("--methods", nargs="+", default=list(METHODS), help="methods, one row each per bits")
    tb.add_argument("--bits", nargs="+", default=list(BITS), help="bit widths (wXaY)")
    tb.add_argument("--scenes", type=POSITIVE, default=32, help="rendered test scenes")
    tb.add_argument("--frames", type=POSITIVE, default=8, help="frames (views) per scene")
    tb.add_argument("--eval-seed", dest="eval_seed", type=NON_NEGATIVE, default=0,
                    help="first test scene index")
    tb.add_argument("--json", default=None, help="also write the rows to this JSON file")
    tb.set_defaults(func=cmd_table)

    pr = sub.add_parser("predict", help="run a model on your own images: cameras, depth and points in a "
                                        ".npz, a coloured point cloud in a .ply", **defaults)
    pr.add_argument("--images", required=True,
                    help="a folder of images (one scene, frames in name order) or a folder of such folders")
    pr.add_argument("--out", required=True,
                    help="output .npz (several scenes: OUT_<scene>.npz each)")
    pr.add_argument("--ply", default=None, help="also write the confident points to this .ply "
                                                "(several scenes: PLY_<scene>.ply each)")
    pr.add_argument("--model", default="tiny", help="shipped pretrained name (tiny)")
    pr.add_argument("--checkpoint", default=None,
                    help="the official model.pt / model.safetensors, or a float, quantized or deployed "
                         "file of ours (overrides --model)")
    pr.add_argument("--mode", default="crop", choices=("crop", "pad"), help="VGGT's preprocessing mode")
    pr.add_argument("--image-size", dest="image_size", type=POSITIVE, default=None,
                    help="image width in pixels, a multiple of 14 (default: the model's img_size)")
    pr.add_argument("--points", default="depth", choices=("depth", "point_map"),
                    help="point cloud from depth + cameras (VGGT's demo default) or the point head")
    pr.add_argument("--keep", type=float, default=0.5,
                    help="fraction of the most confident pixels in the .ply (VGGT's demo: 0.5)")
    pr.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    pr.add_argument("--threads", type=POSITIVE, default=2, help="CPU threads for torch")
    pr.set_defaults(func=cmd_predict)

    from .deploy.bench import SCHEMES

    be = sub.add_parser("bench", help="speed of the deployed aggregator: fp32, bf16, w8a8, w4a8, w4a4 "
                        "(random weights), end to end, per linear shape and per op", **defaults)
    be.add_argument("--model", default="tiny", choices=("tiny", "vggt-1b"), help="architecture preset")
    be.add_argument("--frames", type=POSITIVE, nargs="+", default=None,
                    help="frame counts (default: 8 for tiny, 1 for vggt-1b)")
    be.add_argument("--schemes", nargs="+", choices=SCHEMES, default=list(SCHEMES))
    be.add_argument("--depth", type=POSITIVE, default=None, help="fewer block pairs (a quicker run)")
    be.add_argument("--warmup", type=NON_NEGATIVE, default=1, help="untimed calls first")
    be.add_argument("--iters", type=POSITIVE, default=5, help="timed calls (the median is reported)")
    be.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    be.add_argument("--threads", type=POSITIVE, default=2, help="CPU threads for torch")
    be.add_argument("--no-shapes", dest="no_shapes", action="store_true",
                    help="skip the per-shape table and the block breakdown")
    be.add_argument("--json", default=None, help="write every number to this JSON file")
    be.set_defaults(func=cmd_bench)
    return parser


OUTPUT_OPTIONS = {"out": "--out", "json": "--json", "ply": "--ply"}
REQUIRED_SUFFIXES = {("predict", "out"): ".npz", ("predict", "ply"): ".ply"}


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. Every expected failure ends in one line, ``error: ...``, and exit code 2;
    output paths are checked before any work. Set QVGGT_TRACEBACK=1 to see tracebacks."""
    from .model import CheckpointError

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed its one line (or --help)
        return exc.code
    try:
        for dest, option in OUTPUT_OPTIONS.items():
            if getattr(args, dest, None) is not None:
                check_output_file(getattr(args, dest), option)
                suffix = REQUIRED_SUFFIXES.get((args.command, dest))
                if suffix and Path(getattr(args, dest)).suffix.lower() != suffix:
                    raise ValueError(f"{option} {getattr(args, dest)} must end in {suffix}")
        if getattr(args, "out_dir", None) is not None:
            check_output_dir(args.out_dir, "--out-dir")
        return args.func(args)
    except (ValueError, TypeError, CheckpointError, OSError) as exc:
        if os.environ.get("QVGGT_TRACEBACK"):
            raise
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"interrupted{'; ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not a bad input: still one line, and how to see more
        if os.environ.get("QVGGT_TRACEBACK"):
            raise
        print(f"error: unexpected {type(exc).__name__}: {' '.join(str(exc).split())} "
              "(please report it; QVGGT_TRACEBACK=1 shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
