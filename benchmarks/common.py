"""Shared pieces of the benchmarks: the configs measured, side-by-side timing and the machine's peak."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

from emae.config import PretrainConfig, preset_config


@dataclass(frozen=True)
class BenchConfig:
    name: str
    cfg: PretrainConfig
    batch: int
    device: str = "cpu"
    amp: torch.dtype | None = None  # autocast dtype, None for fp32


def imagenet_config(method: str, arch: str) -> PretrainConfig:
    cfg = preset_config("imagenet-vit-b")
    cfg.method, cfg.arch = method, arch
    return cfg


def bench_configs(method: str = "mae") -> list[BenchConfig]:
    """ViT-S/16 at 224 px (3 channels) and the Fashion-MNIST tiny preset, fp32 on the CPU."""
    tiny = preset_config("fmnist-tiny")
    tiny.method = method
    return [BenchConfig("ViT-S/16 224px", imagenet_config(method, "vit_small_patch16"), 8),
            BenchConfig("fmnist tiny", tiny, tiny.batch_size)]


def gpu_configs(method: str = "mae") -> list[BenchConfig]:
    """ViT-B/16 at 224 px, batch 256, bf16 autocast (fused attention) on the GPU."""
    return [BenchConfig("ViT-B/16 224px", imagenet_config(method, "vit_base_patch16"), 256, "cuda", torch.bfloat16)]


def side_by_side(fns: dict[str, Callable[[], None]], rounds: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each function, calling them in alternation so that both see the same
    machine state (other load, clocks, caches). CUDA work is waited for inside each timing."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def matmul_flops_per_s(size: int = 2048, rounds: int = 5) -> float:
    """This machine's fp32 CPU matmul rate: a large square matmul (2 n^3 FLOPs)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    seconds = side_by_side({"matmul": lambda: torch.mm(a, b)}, rounds)["matmul"]
    return 2 * size**3 / seconds


def header(title: str) -> None:
    print(f"\n== {title} (torch {torch.__version__}, {torch.get_num_threads()} threads)")
