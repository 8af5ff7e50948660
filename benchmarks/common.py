"""Shared pieces of the benchmarks: a run's settings (where its records go, how it times) and the cases measured.

A run's settings (:class:`BenchSettings`) take the path of every ``emae`` command's config: defaults < preset
(``cpu``, the default of ``python -m benchmarks.run_all``; ``gpu``, that of ``python -m benchmarks.bench_gpu``) <
``--config`` file (YAML or JSON) < explicit flags, validated, and saved as ``config.json`` beside the records.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import ClassVar

import torch

from emae.config import PretrainConfig, preset_config
from emae.errors import EmaeError
from emae.settings import CommandConfig


@dataclass(frozen=True)
class BenchConfig:
    """One case a run measures (a model config at a batch size on a device), not a command's config."""

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


H100_BF16_DENSE = 989e12


@dataclass(frozen=True)
class BenchSettings(CommandConfig):
    """A benchmark run: where its records go, how it times (``warmup`` calls not kept, then ``repeats``
    interleaved rounds), the ceilings of [3] (``square``: the side of the square product among them; a nominal peak,
    ``peak_name`` at ``peak_flops``, added to them: a GPU's) and what else it runs (``compile``, ``quick``)."""

    records: str = "runs/bench/records.jsonl"  # "": print the table only
    repeats: int = 10
    warmup: int = 2
    square: int = 2048
    peak_name: str = ""
    peak_flops: float = 0.0  # 0: no nominal peak
    compile: bool = False
    quick: bool = False
    preset: str = ""  # cpu or gpu; "": the command's own

    help_for: ClassVar[dict[str, str]] = {
        "records": "JSON-lines file the records are appended to, with the run's config.json beside it",
        "repeats": "timed rounds", "warmup": "calls of each function before timing",
        "square": "side of the square product among the matmul ceilings of [3]",
        "peak_name": "name of a nominal peak added to the ceilings of [3]",
        "peak_flops": "that peak's FLOP/s (0: none)",
        "compile": "also time the step compiled against eager (adds minutes of compilation)",
        "quick": "the tiny preset at batch 32 and small memory cases: checks that the benchmarks run; its figures "
                 "are not those of docs/performance.md",
        "preset": "named settings: cpu (run_all's) or gpu (bench_gpu's)"}

    @classmethod
    def preset_values(cls, name: str) -> dict:
        if name not in PRESETS:
            raise EmaeError(f"unknown benchmark preset {name!r}; choose one of {sorted(PRESETS)}")
        return dict(PRESETS[name], preset=name)

    def validate(self) -> "BenchSettings":
        for name in ("repeats", "warmup", "square"):
            if getattr(self, name) < 1:
                raise EmaeError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.peak_flops < 0 or (self.peak_flops and not self.peak_name):
            raise EmaeError(f"peak_flops must be >= 0 (0: none) and a peak needs a peak_name, got {self.peak_flops} "
                            f"and {self.peak_name!r}")
        return self

    @property
    def rounds(self) -> str:
        return f"{self.repeats} interleaved rounds"


PRESETS: dict[str, dict] = {
    "cpu": {},  # the CPU figures [1]-[5] of docs/performance.md
    # one GPU: fewer, longer rounds, an 8192 square product and the H100's dense bf16 peak; compiled against eager
    "gpu": dict(repeats=5, warmup=3, square=8192, peak_name="the H100's dense bf16 peak", peak_flops=H100_BF16_DENSE,
                compile=True),
}


def parse_settings(argv: list[str] | None, prog: str, description: str, preset: str) -> BenchSettings:
    """The settings of the command line ``argv`` (None: ``sys.argv``) of a benchmark command whose preset is
    ``preset``; bad input exits with argparse's usage error."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    BenchSettings.add_arguments(parser, preset)
    parser.add_argument("--no-records", dest="records", action="store_const", const="", default=argparse.SUPPRESS,
                        help="print the table only (records '')")
    args = parser.parse_args(argv)
    try:
        return BenchSettings.resolve(args, preset)
    except EmaeError as e:
        parser.error(str(e))


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
