"""Benchmark (not a test): parameter counts of each config and tiny-model forward time for 1/8/24 frames.

    python scripts/bench_model.py [--threads 2] [--repeats 5]

Prints a markdown table; record the numbers with the machine in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from qvggt_lib.eval.tables import markdown_table
from qvggt_lib.model import CONFIGS, build_vggt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--frames", type=int, nargs="+", default=[1, 8, 24])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    for name in CONFIGS:
        sd = build_vggt(name, device="meta").state_dict()
        rows.append([name, f"{sum(v.numel() for v in sd.values()):,}", len(sd)])
    print(markdown_table(["config", "parameters", "non-track state-dict tensors"], rows))

    model = build_vggt("tiny", seed=0).eval()
    size = model.config.img_size
    print(f"\ntiny forward, {size}x{size} px, {args.threads} threads, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, median of {args.repeats}")
    rows = []
    for frames in args.frames:
        images = torch.rand(frames, 3, size, size, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            model(images)
            times = []
            for _ in range(args.repeats):
                tic = time.perf_counter()
                model(images)
                times.append(time.perf_counter() - tic)
        median = sorted(times)[len(times) // 2] * 1e3
        rows.append([frames, f"{median:.1f}", f"{median / frames:.1f}"])
    print(markdown_table(["frames", "forward (ms)", "ms / frame"], rows))


if __name__ == "__main__":
    main()
