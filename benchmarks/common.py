"""Shared pieces of the benchmarks: the configs measured and how many times they are timed."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from emae.config import PretrainConfig, preset_config


@dataclass(frozen=True)
class BenchConfig:
    name: str
    cfg: PretrainConfig
    batch: int
    device: str = "cpu"
    amp: torch.dtype | None = None  # autocast dtype, None for fp32
    flop_target: float | None = None  # the fraction of the matmul ceiling the step should reach

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the step's matrix products."""
        return self.amp or torch.float32


@dataclass(frozen=True)
class Settings:
    """How a run times: ``warmup`` calls not kept, then ``repeats`` interleaved rounds; ``square``: the side of the
    square product among the ceilings; ``peak``: a nominal peak (name, FLOP/s) added to them (a GPU's)."""

    repeats: int = 10
    warmup: int = 2
    square: int = 2048
    peak: tuple[str, float] | None = None

    @property
    def rounds(self) -> str:
        return f"{self.repeats} interleaved rounds"


def imagenet_config(method: str, arch: str) -> PretrainConfig:
    cfg = preset_config("imagenet-vit-b")
    cfg.method, cfg.arch = method, arch
    return cfg


def tiny_config(method: str) -> PretrainConfig:
    cfg = preset_config("fmnist-tiny")
    cfg.method = method
    return cfg


def bench_configs(method: str = "mae", quick: bool = False) -> list[BenchConfig]:
    """ViT-S/16 at 224 px (3 channels) and the Fashion-MNIST tiny preset at its batch size, fp32 on the CPU;
    ``quick``: the tiny preset alone at batch 32 (a check that the benchmarks run, not a measurement)."""
    tiny = tiny_config(method)
    if quick:
        return [BenchConfig("fmnist tiny", tiny, 32)]
    return [BenchConfig("ViT-S/16 224px", imagenet_config(method, "vit_small_patch16"), 8, flop_target=0.8),
            BenchConfig("fmnist tiny", tiny, tiny.batch_size)]


def gpu_configs(method: str = "mae") -> list[BenchConfig]:
    """ViT-B/16 at 224 px, batch 256, bf16 autocast (fused attention) on the GPU."""
    return [BenchConfig("ViT-B/16 224px", imagenet_config(method, "vit_base_patch16"), 256, "cuda", torch.bfloat16)]


def header(title: str) -> None:
    print(f"\n== {title} (torch {torch.__version__}, {torch.get_num_threads()} threads)", flush=True)
