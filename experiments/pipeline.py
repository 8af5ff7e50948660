"""``emae pipeline``: pre-train -> export -> every evaluation whose framework is installed -> report, for MAE
and EMAE side by side, with the untrained backbone through every evaluation and raw pixels under kNN and the
linear probe beside them.

On the ``fmnist-small`` preset (the small-scale regime where MAE beats the untrained backbone, docs/small-scale.md),
MAE pre-trains for the preset's epochs and EMAE for MAE's recorded wall time (``--time-budget-s``: the paper's
claim is efficiency, so the comparison is at equal time); the summary's first lines say in words what was found
(:mod:`results.findings`), quoting EMAE at equal epochs from the committed study and reading ViTDet and UperNet
against the seed spread recorded for those stages.

The stages run in one long-lived process (:mod:`experiments.runner`: a fresh child per stage, ``--jobs`` of them at
a time once what they read is written, the pre-trainings alone; resumable through ``ROOT/pipeline.json``,
stopping after the first failed stage with its error), or with
``--executor local|slurm`` as one job per backbone (:mod:`experiments.executor`); ``--status ROOT`` prints where
a run stands.

Its settings (:class:`PipelineConfig`) are resolved as the dataclass defaults < ``--config`` file (YAML or JSON)
< explicit flags, validated (:class:`emae.settings.CommandConfig`), and saved as ``ROOT/config.json``.
"""
from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from emae.errors import EmaeError
from experiments import executor
from experiments.executor import EXECUTOR_HELP, ExecutorConfig
from experiments.runner import Stage

METHODS = ("mae", "emae")
UNTRAINED = "untrained"


def split_flags(text: str) -> tuple[str, ...]:
    """The flags of a ``pretrain_args`` string, split as a shell splits them (quotes keep spaces)."""
    try:
        return tuple(shlex.split(text))
    except ValueError as e:
        raise EmaeError(f"pretrain_args {text!r}: {e}") from None


STAGE_HELP = {  # the fields the pipeline and the study share
    "root": "folder of every stage's output, logs and state",
    "preset": "pre-training preset (emae pretrain --preset)",
    "pretrain_args": "extra pre-training flags, as on a command line",
}


@dataclass(frozen=True)
class PipelineConfig(ExecutorConfig):
    """``emae pipeline``'s settings (with the executor's, :class:`~experiments.executor.ExecutorConfig`). It has
    no presets of its own: ``preset`` names the pre-training preset."""

    root: str = "runs/pipeline"
    preset: str = "fmnist-small"
    eval_preset: str = "fmnist"
    seed: int = 0
    pretrain_args: str = ""  # extra flags for every pre-training
    equal_time: bool = True  # EMAE pre-trains for MAE's wall time; false: for the preset's epochs
    detect_iters: int = 120
    segment_iters: int = 120
    detect_config: str = "vitdet_mask_rcnn_small_fmnist"
    segment_config: str = "upernet_small_fmnist"
    detection: bool = True
    segmentation: bool = True
    # committed records the summary quotes: EMAE and MAE at equal epochs, and the seed spread of detect / segment
    reference: str = "results/records/fmnist-small-study"
    spread: str = "results/records/pipeline-downstream"

    help_for: ClassVar[dict[str, str]] = {
        **EXECUTOR_HELP, **STAGE_HELP, "eval_preset": "linprobe/finetune/knn preset", "seed": "seed of every stage",
        "equal_time": "pre-train EMAE for MAE's recorded wall time (else for the preset's epochs)",
        "detect_iters": "detection iterations", "segment_iters": "segmentation iterations",
        "detect_config": "emae eval detect --config of the detect stages",
        "segment_config": "emae eval segment --config of the segment stages",
        "detection": "run the detectron2 stages", "segmentation": "run the mmseg stages",
        "reference": "records of a study with MAE and EMAE at equal epochs, quoted in the summary ('': none)",
        "spread": "records of the detect and segment stages at several seeds, read as their noise ('': none)"}

    def validate(self) -> "PipelineConfig":
        ExecutorConfig.validate(self)
        split_flags(self.pretrain_args)
        for name in ("detect_iters", "segment_iters"):
            if getattr(self, name) < 1:
                raise EmaeError(f"{name} must be >= 1, got {getattr(self, name)}")
        return self


def stages(cfg: PipelineConfig) -> list[Stage]:
    """The pipeline's stages in the order they run (those whose framework is missing are kept, to be skipped)."""
    root = Path(cfg.root)
    data = root / "data"
    pretrain_args = split_flags(cfg.pretrain_args)
    out: list[Stage] = []
    if cfg.detection:
        out.append(Stage("data/detection", ("data", "detection", "--out", str(data / "detection")), "detectron2"))
    if cfg.segmentation:
        out.append(Stage("data/segmentation", ("data", "segmentation", "--out", str(data / "segmentation")), "mmseg"))
    out += baseline_stages(root, "", cfg.preset, cfg.seed, cfg.eval_preset, pretrain_args)
    untrained = str(root / UNTRAINED / "pretrain" / "checkpoint.pth")
    out += downstream_stages(UNTRAINED, root / UNTRAINED, untrained, untrained, cfg)
    for method in METHODS:
        run = root / method
        ckpt = str(run / "pretrain" / "checkpoint.pth")
        encoder = str(run / "export" / "encoder.safetensors")  # the classification evaluations start from it
        budget = str(root / "mae" / "pretrain" / "records.jsonl") if method == "emae" and cfg.equal_time else ""
        out.append(pretrain_stage(f"{method}/pretrain", cfg.preset, method, cfg.seed, run / "pretrain",
                                  pretrain_args, budget))
        out.append(Stage(f"{method}/export", ("export", "--checkpoint", ckpt, "--to", "timm", "--out", encoder)))
        out.extend(classification_stages(method, run, encoder, cfg.seed, cfg.eval_preset))
        out.append(Stage(f"{method}/consistency", ("eval", "consistency", "--checkpoint", ckpt, "--seed",
                                                   str(cfg.seed), "--output-dir", str(run / "consistency"))))
        out += downstream_stages(method, run, ckpt, encoder, cfg)
    out.append(Stage("report", ("report", "--records", str(root), "--out", str(root / "report"))))
    return out


def downstream_stages(name: str, run: Path, checkpoint: str, encoder: str, cfg: PipelineConfig) -> list[Stage]:
    """Fine-tuning (from ``encoder``), ViTDet and UperNet (from the pre-training ``checkpoint``) of one backbone."""
    seed = str(cfg.seed)
    out = [Stage(f"{name}/finetune", ("eval", "finetune", "--checkpoint", encoder, "--seed", seed, "--preset",
                                      cfg.eval_preset, "--output-dir", str(run / "finetune")))]
    data = Path(cfg.root) / "data"
    if cfg.detection:
        out.append(Stage(f"{name}/detect", ("eval", "detect", "--checkpoint", checkpoint, "--config", cfg.detect_config,
                                            "--data", str(data / "detection"), "--output-dir", str(run / "detect"),
                                            "--opts", f"train.seed={seed}", f"train.max_iter={cfg.detect_iters}"),
                         "detectron2"))
    if cfg.segmentation:
        out.append(Stage(f"{name}/segment", ("eval", "segment", "--checkpoint", checkpoint, "--seed", seed,
                                             "--config", cfg.segment_config, "--data", str(data / "segmentation"),
                                             "--iters", str(cfg.segment_iters), "--output-dir", str(run / "segment")),
                         "mmseg"))
    return out


def baseline_stages(root: Path, suffix: str, preset: str, seed: int, eval_preset: str,
                    pretrain_args: tuple[str, ...] = (), eval_args: tuple[str, ...] = ()) -> list[Stage]:
    """kNN and the linear probe of the baselines every accuracy is read against: the untrained backbone of the
    pre-training preset's architecture and seed (``emae pretrain --epochs 0``), in ``ROOT/untrained{suffix}``,
    and raw pixels, in ``ROOT/pixels{suffix}``; ``eval_args``: flags added to every evaluation."""
    untrained, pixels = f"untrained{suffix}", f"pixels{suffix}"
    checkpoint = root / untrained / "pretrain" / "checkpoint.pth"
    return [pretrain_stage(f"{untrained}/pretrain", preset, "mae", seed, checkpoint.parent,
                           (*pretrain_args, "--epochs", "0")),
            *classification_stages(untrained, root / untrained, str(checkpoint), seed, eval_preset, eval_args),
            *classification_stages(pixels, root / pixels, "pixels", seed, eval_preset, eval_args)]


def pretrain_stage(name: str, preset: str, method: str, seed: int, out: Path, extra: tuple[str, ...],
                   budget_from: str = "") -> Stage:
    """A pre-training that a re-run continues from its last checkpoint (or starts again if it wrote none), run
    alone on every core (its wall time is a measurement); ``budget_from``: the records of a pre-training whose
    wall time it trains for."""
    return Stage(name, ("pretrain", "--preset", preset, "--method", method, "--seed", str(seed), "--output-dir",
                        str(out), *extra), resume_argv=("--resume",), state=str(out / "checkpoint.pth"),
                 budget_from=budget_from, exclusive=True)


def classification_stages(name: str, run: Path, checkpoint: str, seed: int, eval_preset: str,
                          extra: tuple[str, ...] = ()) -> list[Stage]:
    """kNN and the linear probe of one backbone, with the flags ``extra``; one feature extraction
    (``run/features``) serves both."""
    return [Stage(f"{name}/{protocol}", ("eval", protocol, "--checkpoint", checkpoint, "--seed", str(seed), "--preset",
                                         eval_preset, "--features-dir", str(run / "features"), "--output-dir",
                                         str(run / protocol), *extra))
            for protocol in ("knn", "linprobe")]


def run_pipeline(cfg: PipelineConfig) -> int:
    """The pipeline of ``cfg`` in order in this process, or as jobs (``cfg.executor``)."""
    return executor.run(stages(cfg), cfg, lambda root: summary(root, cfg))


def summary(root: Path, cfg: PipelineConfig) -> str:
    """The findings in words (:mod:`results.findings`), then every measurement side by side."""
    from results.findings import findings
    from results.summary import summary_markdown

    return "\n".join([*findings(root, cfg.reference, cfg.spread), "", summary_markdown(root)])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    PipelineConfig.add_arguments(parser)
    executor.add_status_argument(parser)


def main(args: argparse.Namespace) -> int:
    if args.status is not None:
        return executor.print_status(lambda cfg: stages(cfg), PipelineConfig, Path(args.status))
    return run_pipeline(PipelineConfig.resolve(args))
