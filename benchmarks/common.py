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


def bench_configs(method: str = "mae") -> list[BenchConfig]:
    """ViT-S/16 at 224 px (3 channels) and the Fashion-MNIST tiny preset, as pre-training configs."""
    vit_s = PretrainConfig(method=method, arch="vit_small_patch16", img_size=224, in_chans=3,
                           mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    tiny = preset_config("fmnist-tiny")
    tiny.method = method
    return [BenchConfig("ViT-S/16 224px", vit_s, 8), BenchConfig("fmnist tiny", tiny, tiny.batch_size)]


def side_by_side(fns: dict[str, Callable[[], None]], rounds: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each function, calling them in alternation so that both see the same
    machine state (other load, clocks, caches)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def matmul_flops_per_s(size: int = 2048, rounds: int = 5) -> float:
    """This machine's fp32 matmul rate: a large square matmul (2 n^3 FLOPs)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    seconds = side_by_side({"matmul": lambda: torch.mm(a, b)}, rounds)["matmul"]
    return 2 * size**3 / seconds


def header(title: str) -> None:
    print(f"\n== {title} (torch {torch.__version__}, {torch.get_num_threads()} threads)")
