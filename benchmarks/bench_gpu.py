"""The step benchmarks on one GPU: ViT-B/16 at 224 px, batch 256, bf16 autocast with fused attention.

Run by ``benchmarks/gpu_check.sh``. Prints images/s of ours against MAE's published formulation, EMAE
batched against serial, the achieved FLOP/s (the engine's count) against the higher of the bf16 matrix-product
rates measured in the same rounds and the H100's 989 TFLOP/s dense bf16 (MFU), and the step compiled against
eager; then the table of figures, appended as records to ``runs/bench/records.jsonl`` (or ``--records``).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.bench_step import batched_vs_serial, compiled_vs_eager, ours_vs_reference
from benchmarks.common import Settings, gpu_configs, header
from benchmarks.run_all import DEFAULT_RECORDS, finish

H100_BF16_DENSE = 989e12


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_gpu", description=__doc__)
    parser.add_argument("--records", type=Path, default=DEFAULT_RECORDS)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark needs a GPU")
    started = time.perf_counter()
    header(f"GPU step, {torch.cuda.get_device_name()}")
    torch.backends.cuda.matmul.allow_tf32 = True
    settings = Settings(args.repeats, warmup=3, square=8192, peak=("the H100's dense bf16 peak", H100_BF16_DENSE))
    figures = []
    for bench in gpu_configs():
        figures += ours_vs_reference(bench, settings)
    for bench in gpu_configs("emae"):
        figures += batched_vs_serial(bench, settings)
    for bench in gpu_configs():
        figures += compiled_vs_eager(bench, settings)
    finish(figures, started, args.records, "benchmarks.bench_gpu")


if __name__ == "__main__":
    main()
