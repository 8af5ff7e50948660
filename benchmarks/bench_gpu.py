"""The step benchmarks on one GPU: ViT-B/16 at 224 px, batch 256, bf16 autocast with fused attention.

Run by ``benchmarks/gpu_check.sh``. Prints images/s of ours against MAE's published formulation, EMAE
batched against serial, the achieved FLOP/s (the engine's count) against the higher of the bf16 matrix-product
rates measured in the same rounds and the H100's 989 TFLOP/s dense bf16 (MFU), and the step compiled against
eager (with the ``gpu`` preset's ``compile``); then the table of figures, appended as records to
``runs/bench/records.jsonl`` (or ``--records``) with the run's settings (:class:`benchmarks.common.BenchSettings`,
preset ``gpu``) as ``config.json`` beside them.
"""
from __future__ import annotations

import time

import torch

from benchmarks.bench_step import batched_vs_serial, compiled_vs_eager, ours_vs_reference
from benchmarks.common import gpu_configs, header, parse_settings
from benchmarks.run_all import finish


def main(argv: list[str] | None = None) -> None:
    settings = parse_settings(argv, "python -m benchmarks.bench_gpu", __doc__, "gpu")
    if settings.quick:
        raise SystemExit("--quick is the CPU benchmarks' check (python -m benchmarks.run_all); the GPU run has none")
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark needs a GPU")
    started = time.perf_counter()
    header(f"GPU step, {torch.cuda.get_device_name()}")
    torch.backends.cuda.matmul.allow_tf32 = True
    figures = []
    for bench in gpu_configs():
        figures += ours_vs_reference(bench, settings)
    for bench in gpu_configs("emae"):
        figures += batched_vs_serial(bench, settings)
    if settings.compile:
        for bench in gpu_configs():
            figures += compiled_vs_eager(bench, settings)
    finish(figures, started, settings, "benchmarks.bench_gpu")


if __name__ == "__main__":
    main()
