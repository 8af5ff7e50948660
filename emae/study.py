"""``emae study``: the small-scale reproduction of Table XII: pre-training length against accuracy and time.

For each seed, the baselines (the untrained backbone of the preset's architecture and seed, and raw pixels), then
for each method and pre-training length (epochs): pre-train (one warm-up epoch in four), then kNN and the linear
probe, and at the end the report, whose Table XII holds the means over seeds and whose cost table and plot put
top-1 against pre-training wall time. The stages run through :func:`emae.pipeline.run_stages`: resumable,
stopping at the first failed stage.

    emae study --root runs/study-small --runs mae:1,2,4 emae:1,2 --seeds 0 1 2 --preset fmnist-small
"""
from __future__ import annotations

import argparse
from pathlib import Path

from emae.errors import EmaeError
from emae.methods import METHODS
from emae.pipeline import Stage, baseline_stages, classification_stages, pretrain_stage, run_stages

# the committed study (results/records/fmnist-small-study): MAE at 1x, 2x and 4x, EMAE at 1x and 2x of a quarter of
# the fmnist-small preset's 4 epochs
DEFAULT_RUNS = ("mae:1,2,4", "emae:1,2")
DEFAULT_PRESET = "fmnist-small"
DEFAULT_PRETRAIN_ARGS = ""


def parse_runs(specs: list[str]) -> list[tuple[str, int]]:
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


def study_stages(root: Path, runs: list[tuple[str, int]], seeds: list[int], preset: str, eval_preset: str,
                 pretrain_args: tuple[str, ...] = ()) -> list[Stage]:
    """Seed by seed, so that a study stopped early already has every setting of its first seeds."""
    plan = []
    for seed in seeds:
        plan += baseline_stages(root, f"-seed{seed}", preset, seed, eval_preset, pretrain_args)
        for method, epochs in runs:
            name = f"{method}-ep{epochs}-seed{seed}"
            run = root / name
            plan.append(pretrain_stage(f"{name}/pretrain", preset, method, seed, run / "pretrain",
                                       ("--epochs", str(epochs), "--warmup-epochs", str(epochs // 4), *pretrain_args)))
            plan += classification_stages(name, run, str(run / "pretrain" / "checkpoint.pth"), seed, eval_preset)
    plan.append(Stage("report", ("report", "--records", str(root), "--out", str(root / "report"))))
    return plan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default="runs/study", help="folder of every stage's output, logs and state")
    parser.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS),
                        help="METHOD:EPOCHS[,EPOCHS...] (default: %(default)s)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--preset", default=DEFAULT_PRESET, help="pre-training preset (default: %(default)s)")
    parser.add_argument("--eval-preset", default="fmnist", help="kNN / linear-probe preset")
    parser.add_argument("--pretrain-args", default=DEFAULT_PRETRAIN_ARGS,
                        help="extra pre-training flags (default: %(default)s)")


def main(args: argparse.Namespace) -> int:
    runs = parse_runs(args.runs)
    plan = study_stages(Path(args.root), runs, args.seeds, args.preset, args.eval_preset,
                        tuple(args.pretrain_args.split()))
    config = dict(runs=runs, seeds=args.seeds, preset=args.preset, eval_preset=args.eval_preset,
                  pretrain_args=args.pretrain_args)
    return run_stages(plan, Path(args.root), config)
