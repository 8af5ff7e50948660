"""``emae study``: the small-scale reproduction of Table XII: pre-training length against accuracy and time.

For each seed, the baselines (the untrained backbone of the preset's architecture and seed, and raw pixels), then
for each method and pre-training length (epochs): pre-train (one warm-up epoch in four), then kNN and the linear
probe, and at the end the report, whose Table XII holds the means over seeds and whose cost table and plot put
top-1 against pre-training wall time. The stages run through :func:`experiments.runner.run_stages` (``--jobs`` at a
time, the pre-trainings alone; resumable, stopping after the first failed stage), or with ``--executor
local|slurm`` as one job per backbone (:mod:`experiments.executor`); ``--status ROOT`` prints where a study stands.
Its settings (:class:`StudyConfig`) are resolved as defaults < ``--config`` file (YAML or JSON) < explicit flags,
validated, and saved as ``ROOT/config.json``.

    emae study --root runs/study-small --runs mae:1,2,4 emae:1,2 --seeds 0 1 2 --preset fmnist-small
"""
from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from emae.errors import EmaeError
from emae.methods import METHODS
from experiments import executor
from experiments.executor import EXECUTOR_HELP, ExecutorConfig
from experiments.pipeline import STAGE_HELP, baseline_stages, classification_stages, pretrain_stage, split_flags
from experiments.runner import Stage


def parse_runs(specs: Iterable[str]) -> list[tuple[str, int]]:
    """``["mae:1,2", "emae:4"]`` -> ``[("mae", 1), ("mae", 2), ("emae", 4)]``."""
    runs = []
    for spec in specs:
        method, sep, epochs = spec.partition(":")
        if not sep or method not in METHODS:
            raise EmaeError(f"--runs {spec!r}: expected METHOD:EPOCHS[,EPOCHS...] with METHOD one of "
                            f"{sorted(METHODS)}")
        try:
            lengths = [int(e) for e in epochs.split(",")]
        except ValueError:
            raise EmaeError(f"--runs {spec!r}: epochs must be integers") from None
        if any(e < 1 for e in lengths):
            raise EmaeError(f"--runs {spec!r}: epochs must be >= 1")
        runs += [(method, e) for e in lengths]
    return runs


@dataclass(frozen=True)
class StudyConfig(ExecutorConfig):
    """``emae study``'s settings (with the executor's, :class:`~experiments.executor.ExecutorConfig`). It has no
    presets of its own: ``preset`` names the pre-training preset."""

    root: str = "runs/study"
    # the committed study (results/records/fmnist-small-study): MAE at 1x, 2x and 4x, EMAE at 1x and 2x of a quarter
    # of the fmnist-small preset's 4 epochs
    runs: tuple[str, ...] = ("mae:1,2,4", "emae:1,2")  # read by parse_runs
    seeds: tuple[int, ...] = (0, 1, 2)
    preset: str = "fmnist-small"
    eval_preset: str = "fmnist"
    pretrain_args: str = ""  # added to every pre-training's flags
    eval_args: str = ""  # added to every kNN's and linear probe's flags

    help_for: ClassVar[dict[str, str]] = {**EXECUTOR_HELP, **STAGE_HELP, "runs": "METHOD:EPOCHS[,EPOCHS...]",
                                          "seeds": "one run of every setting per seed",
                                          "eval_preset": "kNN / linear-probe preset",
                                          "eval_args": "extra kNN and linear-probe flags, as on a command line"}

    def validate(self) -> "StudyConfig":
        ExecutorConfig.validate(self)
        parse_runs(self.runs)
        split_flags(self.pretrain_args)
        split_flags(self.eval_args)
        return self


def study_stages(cfg: StudyConfig) -> list[Stage]:
    """Seed by seed, so that a study stopped early already has every setting of its first seeds."""
    root, pretrain_args, eval_args = Path(cfg.root), split_flags(cfg.pretrain_args), split_flags(cfg.eval_args)
    plan = []
    for seed in cfg.seeds:
        plan += baseline_stages(root, f"-seed{seed}", cfg.preset, seed, cfg.eval_preset, pretrain_args, eval_args)
        for method, epochs in parse_runs(cfg.runs):
            name = f"{method}-ep{epochs}-seed{seed}"
            run = root / name
            plan.append(pretrain_stage(f"{name}/pretrain", cfg.preset, method, seed, run / "pretrain",
                                       ("--epochs", str(epochs), "--warmup-epochs", str(epochs // 4), *pretrain_args)))
            plan += classification_stages(name, run, str(run / "pretrain" / "checkpoint.pth"), seed, cfg.eval_preset,
                                          eval_args)
    plan.append(Stage("report", ("report", "--records", str(root), "--out", str(root / "report"))))
    return plan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    StudyConfig.add_arguments(parser)
    executor.add_status_argument(parser)


def main(args: argparse.Namespace) -> int:
    if args.status is not None:
        return executor.print_status(lambda cfg: study_stages(cfg), StudyConfig, Path(args.status))
    cfg = StudyConfig.resolve(args)
    return executor.run(study_stages(cfg), cfg)
