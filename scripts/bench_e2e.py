"""End-to-end benchmark (not a test): the VGGT-1B aggregator in FP32, BF16, W8A8, W4A8 and W4A4.

    python scripts/bench_e2e.py                          # H100: S = 1, 10, 20, 40 frames, 518 px
    python scripts/bench_e2e.py --frames 20 --schemes bf16 w4a4 --iters 5 --json out.json
    python scripts/bench_e2e.py --smoke                  # CPU, tiny 2-block model, torch backend

`qvggt bench` is the CPU-first command line for the same benchmark (per-shape and per-op tables too).

What is timed and how: qvggt_lib/deploy/bench.py. FP32 uses PyTorch's default matmul precision
(TF32 off) unless --tf32. The table is printed last; --json writes every number.
"""

from __future__ import annotations

import argparse

from qvggt_lib.deploy.bench import SCHEMES, BenchSettings, run, table


def parse_args(argv=None) -> tuple[BenchSettings, str | None]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = BenchSettings()
    p.add_argument("--frames", type=int, nargs="+", default=default.frames)
    p.add_argument("--schemes", nargs="+", choices=SCHEMES, default=default.schemes)
    p.add_argument("--warmup", type=int, default=default.warmup)
    p.add_argument("--iters", type=int, default=default.iters)
    p.add_argument("--config", default=default.config)
    p.add_argument("--depth", type=int, default=None, help="override the number of block pairs")
    p.add_argument("--img-size", dest="img_size", type=int, default=None)
    p.add_argument("--device", default=default.device)
    p.add_argument("--backend", default=default.backend, choices=("auto", "triton", "torch", "cpu"))
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls in the FP32 row")
    p.add_argument("--json", default=None, help="write the results to this file")
    p.add_argument("--smoke", action="store_true",
                   help="CPU, tiny config, depth 2, torch backend, S = 1 and 2, 1 iteration")
    args = vars(p.parse_args(argv))
    json_path, smoke = args.pop("json"), args.pop("smoke")
    return (BenchSettings.smoke() if smoke else BenchSettings(**args)), json_path


def main(argv=None) -> dict:
    settings, json_path = parse_args(argv)
    results = run(settings, json_path)
    print(table(results))
    return results


if __name__ == "__main__":
    main()
