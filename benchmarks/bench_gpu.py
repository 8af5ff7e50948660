"""The step benchmarks on one GPU: ViT-B/16 at 224 px, batch 256, bf16 autocast with fused attention.

Run by ``benchmarks/gpu_check.sh``. Prints images/s of ours against MAE's published formulation, EMAE
batched against serial, MFU: achieved FLOP/s (torch's FLOP counter) against the H100's 989 TFLOP/s
dense bf16, and the step compiled against eager.
"""
from __future__ import annotations

import torch

from benchmarks.bench_step import achieved_flops, batched_vs_serial, compiled_vs_eager, ours_vs_reference
from benchmarks.common import gpu_configs, header

H100_BF16_DENSE = 989e12


def main(rounds: int = 5) -> None:
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark needs a GPU")
    header(f"GPU step, {torch.cuda.get_device_name()}")
    torch.backends.cuda.matmul.allow_tf32 = True
    for bench in gpu_configs():
        ours_vs_reference(bench, rounds)
    for bench in gpu_configs("emae"):
        batched_vs_serial(bench, rounds)
    for bench in gpu_configs():
        achieved_flops(bench, H100_BF16_DENSE, rounds, "the H100's dense bf16 peak (MFU)")
    for bench in gpu_configs():
        compiled_vs_eager(bench, rounds)


if __name__ == "__main__":
    main()
