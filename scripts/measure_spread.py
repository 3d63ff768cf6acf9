"""How far the course's numbers move between instruction sets and thread counts (docs/portability.md).

    python scripts/measure_spread.py [--settings native:1 native:2 avx2:1 avx2:2]

Each setting runs in a child process (the instruction set is fixed when torch loads) and computes,
on the shipped tiny model, one quantity of each kind a notebook prints: float model outputs,
NFDS noise scores, one layer's W4A4 error on recorded inputs, whole-model W4A4 errors and depth
AbsRel. The table gives each quantity's relative spread, (max - min) / max over the settings:
what a checked output may print is decided from it. About a minute per setting on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from qvggt_lib.eval.tables import markdown_table

AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def quantities() -> dict[str, list[float]]:
    """The measured values in this process (name -> values)."""
    import torch

    from qvggt_lib.course import course_scenes, load_course_model, scene_images, seed_everything
    from qvggt_lib.course.smoothing_analysis import (
        prediction_errors,
        smoothed_layer_errors,
        smoothed_layers,
    )
    from qvggt_lib.quant import QuantVGGTConfig, make_config, quantize, record_inputs
    from qvggt_lib.quant.sampling import candidate_pool, collect_candidate_features, noise_scores

    torch.set_grad_enabled(False)
    seed_everything(0)
    model = load_course_model("tiny")
    test = course_scenes("test", count=2, frames=8, model=model)
    calibration = [scene_images(s) for s in course_scenes("calib", count=4, frames=8, model=model)]
    fp = [model(scene_images(s)) for s in test]
    out = {f"float outputs ({k})": [float(torch.stack([o[k].double().mean() for o in fp]).mean())]
           for k in ("depth", "world_points", "pose_enc")}
    stats, _ = collect_candidate_features(model, candidate_pool(12, image_size=model.config.img_size), 4)
    out["NFDS noise scores"] = [float(v) for v in noise_scores(stats)]
    config = QuantVGGTConfig.ablation("dsfq", bits="w4a4", seed=0, calibrate=False)
    _, layers, rotations = smoothed_layers(model, config)
    with record_inputs(model, layers) as inputs:
        model(scene_images(test[0]))
    out["one layer's W4A4 output error (rotated)"] = [
        smoothed_layer_errors(inputs[n], model.get_submodule(n).weight.float(), None, rotations[n])["output"]
        for n in layers]
    for name, method in (("RTN", make_config("rtn", "w4a4")), ("DSFQ closed form", config)):
        errors = prediction_errors(quantize(model, method, calibration=calibration, progress=False), test, fp)
        out[f"whole-model W4A4 {name} errors (depth, points)"] = [errors["depth"], errors["world_points"]]
        out[f"whole-model W4A4 {name} depth AbsRel"] = [errors["depth_abs_rel"]]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=["native:1", "native:2", "avx2:1", "avx2:2"],
                        help="ISA:THREADS pairs, ISA native or avx2")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(quantities()))
        return 0
    runs = {}
    for setting in args.settings:
        isa, threads = setting.split(":")
        env = {**os.environ, "OMP_NUM_THREADS": threads, **(AVX2 if isa == "avx2" else {})}
        child = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True,
                               text=True, check=True)
        runs[setting] = json.loads(child.stdout.strip().splitlines()[-1])
        print(f"measured {setting}", file=sys.stderr)
    first = next(iter(runs.values()))
    rows = []
    for name, values in first.items():
        spread = max(
            (max(r[name][i] for r in runs.values()) - min(r[name][i] for r in runs.values()))
            / max(max(abs(r[name][i]) for r in runs.values()), 1e-30)
            for i in range(len(values)))
        rows.append([name, f"{values[0]:.4g}", f"{spread:.1e}"])
    print(markdown_table(["quantity", "example value", f"relative spread over {', '.join(runs)}"],
                         rows, right=[False, True, True]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
