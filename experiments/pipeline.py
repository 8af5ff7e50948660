"""``emae pipeline``: pre-train -> export -> every evaluation whose framework is installed -> report, for MAE
and EMAE side by side, with kNN and the linear probe of the untrained backbone and of raw pixels beside them.

Each stage is one ``emae`` command run in its own process, with its output in ``ROOT/logs/STAGE.log``;
the display shows one line per stage. ``ROOT/pipeline.json`` records the finished stages, so a re-run
skips them (a killed pre-training continues from its checkpoint, a killed evaluation from its own
state), and the pipeline stops at the first failed stage with that stage's error.

Its settings (:class:`PipelineConfig`) are resolved as the dataclass defaults < ``--config`` file (YAML or JSON)
< explicit flags, validated (:class:`emae.settings.CommandConfig`), and saved as ``ROOT/config.json``.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from emae.errors import EmaeError
from emae.settings import CommandConfig

METHODS = ("mae", "emae")


@dataclass(frozen=True)
class Stage:
    name: str  # e.g. "emae/pretrain"
    argv: tuple[str, ...]  # arguments of the emae command
    needs: str = ""  # a module that must be importable (the stage is skipped otherwise)
    resume_argv: tuple[str, ...] = field(default=())  # added when the stage was started before and left ``state``
    state: str = ""  # the file a started stage continues from (e.g. its checkpoint)

    def resumes(self, started: bool) -> bool:
        """Whether a run of the stage continues an earlier one: it was started and left its state."""
        return started and bool(self.resume_argv) and Path(self.state).is_file()

    @property
    def available(self) -> bool:
        return not self.needs or importlib.util.find_spec(self.needs) is not None


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
class PipelineConfig(CommandConfig):
    """``emae pipeline``'s settings. It has no presets of its own: ``preset`` names the pre-training preset."""

    root: str = "runs/pipeline"
    preset: str = "fmnist-tiny"
    eval_preset: str = "fmnist"
    seed: int = 0
    # sized to finish in about 15 minutes on a 2-core CPU: half the preset's images, shorter detection and
    # segmentation schedules than their presets' 300 iterations
    pretrain_args: str = "--subset 8192"  # extra flags for both pre-trainings
    detect_iters: int = 150
    segment_iters: int = 200
    detect_config: str = "vitdet_mask_rcnn_tiny"
    segment_config: str = "upernet_tiny_fmnist"
    detection: bool = True
    segmentation: bool = True

    help_for: ClassVar[dict[str, str]] = {
        **STAGE_HELP, "eval_preset": "linprobe/finetune/knn preset", "seed": "seed of every stage",
        "detect_iters": "detection iterations", "segment_iters": "segmentation iterations",
        "detect_config": "emae eval detect --config of the detect stages",
        "segment_config": "emae eval segment --config of the segment stages",
        "detection": "run the detectron2 stages", "segmentation": "run the mmseg stages"}

    def validate(self) -> "PipelineConfig":
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
    for method in METHODS:
        run = root / method
        ckpt = str(run / "pretrain" / "checkpoint.pth")
        encoder = str(run / "export" / "encoder.safetensors")  # the classification evaluations start from it
        common = ("--checkpoint", ckpt, "--seed", str(cfg.seed))
        out.append(pretrain_stage(f"{method}/pretrain", cfg.preset, method, cfg.seed, run / "pretrain",
                                  pretrain_args))
        out.append(Stage(f"{method}/export", ("export", "--checkpoint", ckpt, "--to", "timm", "--out", encoder)))
        out.extend(classification_stages(method, run, encoder, cfg.seed, cfg.eval_preset))
        out.append(Stage(f"{method}/finetune", ("eval", "finetune", "--checkpoint", encoder, "--seed", str(cfg.seed),
                                                "--preset", cfg.eval_preset, "--output-dir", str(run / "finetune"))))
        out.append(Stage(f"{method}/consistency", ("eval", "consistency", *common, "--output-dir",
                                                   str(run / "consistency"))))
        if cfg.detection:
            out.append(Stage(f"{method}/detect", ("eval", "detect", "--checkpoint", ckpt, "--config",
                                                  cfg.detect_config, "--data", str(data / "detection"),
                                                  "--output-dir", str(run / "detect"), "--opts",
                                                  f"train.seed={cfg.seed}", f"train.max_iter={cfg.detect_iters}"),
                             "detectron2"))
        if cfg.segmentation:
            out.append(Stage(f"{method}/segment", ("eval", "segment", *common, "--config", cfg.segment_config,
                                                   "--data", str(data / "segmentation"), "--iters",
                                                   str(cfg.segment_iters), "--output-dir", str(run / "segment")),
                             "mmseg"))
    out.append(Stage("report", ("report", "--records", str(root), "--out", str(root / "report"))))
    return out


def baseline_stages(root: Path, suffix: str, preset: str, seed: int, eval_preset: str,
                    pretrain_args: tuple[str, ...] = ()) -> list[Stage]:
    """kNN and the linear probe of the baselines every accuracy is read against: the untrained backbone of the
    pre-training preset's architecture and seed (``emae pretrain --epochs 0``), in ``ROOT/untrained{suffix}``,
    and raw pixels, in ``ROOT/pixels{suffix}``."""
    untrained, pixels = f"untrained{suffix}", f"pixels{suffix}"
    checkpoint = root / untrained / "pretrain" / "checkpoint.pth"
    return [pretrain_stage(f"{untrained}/pretrain", preset, "mae", seed, checkpoint.parent,
                           (*pretrain_args, "--epochs", "0")),
            *classification_stages(untrained, root / untrained, str(checkpoint), seed, eval_preset),
            *classification_stages(pixels, root / pixels, "pixels", seed, eval_preset)]


def pretrain_stage(name: str, preset: str, method: str, seed: int, out: Path, extra: tuple[str, ...]) -> Stage:
    """A pre-training that a re-run continues from its last checkpoint (or starts again if it wrote none)."""
    return Stage(name, ("pretrain", "--preset", preset, "--method", method, "--seed", str(seed), "--output-dir",
                        str(out), *extra), resume_argv=("--resume",), state=str(out / "checkpoint.pth"))


def classification_stages(name: str, run: Path, checkpoint: str, seed: int, eval_preset: str) -> list[Stage]:
    """kNN and the linear probe of one backbone; one feature extraction (``run/features``) serves both."""
    return [Stage(f"{name}/{protocol}", ("eval", protocol, "--checkpoint", checkpoint, "--seed", str(seed), "--preset",
                                         eval_preset, "--features-dir", str(run / "features"), "--output-dir",
                                         str(run / protocol)))
            for protocol in ("knn", "linprobe")]


class State:
    """``pipeline.json``: which stages finished (with their wall time) and which were started."""

    def __init__(self, path: Path):
        self.path = path
        self.data = {"done": {}, "started": []}
        if path.exists():
            try:
                self.data = json.loads(path.read_text())
            except ValueError as e:
                raise EmaeError(f"{path}: not valid JSON ({e}); remove it to run every stage again") from None
            if not isinstance(self.data, dict) or not {"done", "started"} <= set(self.data):
                raise EmaeError(f"{path}: not a pipeline state (no 'done' and 'started'); remove it to run every "
                                f"stage again")

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        os.replace(tmp, self.path)

    def done(self, name: str) -> bool:
        return name in self.data["done"]


def run_stage(stage: Stage, log: Path, resume: bool) -> int:
    argv = [sys.executable, "-m", "emae", *stage.argv, *(stage.resume_argv if resume else ())]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"$ {' '.join(argv)}\n")
        f.flush()
        return subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode


def last_error(log: Path) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    return errors[-1] if errors else "\n".join(lines[-15:])


def check_stages(plan: list[Stage], root: Path) -> None:
    """What can be checked before the first stage runs: every pre-training's flags and preset, every
    evaluation's preset, and the records already under ``root`` (which the report will read)."""
    from emae import engine
    from emae.cli import CommandParser
    from emae.records import read_records
    from evaluation.presets import PROTOCOLS, preset_values

    for stage in plan:
        if stage.argv[:1] == ("pretrain",):
            parser = CommandParser(prog=f"emae pretrain (stage {stage.name})")
            engine.add_arguments(parser)
            engine.resolve_config(parser.parse_args(stage.argv[1:]))
        elif stage.argv[:1] == ("eval",) and stage.argv[1] in PROTOCOLS and "--preset" in stage.argv:
            preset_values(stage.argv[stage.argv.index("--preset") + 1], stage.argv[1])
    if root.is_dir():
        read_records(root)


def run_pipeline(cfg: PipelineConfig) -> int:
    return run_stages(stages(cfg), Path(cfg.root), cfg)


def run_stages(plan: list[Stage], root: Path, config: CommandConfig) -> int:
    """Run the stages in order, skipping those ``ROOT/pipeline.json`` records as done, then print the summary
    of the records written; raises EmaeError with the failed stage's error. ``config`` (the run's resolved
    config) is saved as ``ROOT/config.json``."""
    check_stages(plan, root)
    state = State(root / "pipeline.json")
    config.save(root)
    started = time.perf_counter()
    for index, stage in enumerate(plan, 1):
        prefix = f"[{index:2d}/{len(plan)}] {stage.name:<22}"
        if state.done(stage.name):
            print(f"{prefix} done earlier ({state.data['done'][stage.name]:.0f} s)", flush=True)
            continue
        if not stage.available:
            print(f"{prefix} skipped: {stage.needs} is not installed", flush=True)
            continue
        print(f"{prefix} running ...", end="", flush=True)
        resume = stage.name in state.data["started"]
        if not resume:
            state.data["started"].append(stage.name)
            state.save()
        t0 = time.perf_counter()
        log = root / "logs" / f"{stage.name.replace('/', '-')}.log"
        code = run_stage(stage, log, stage.resumes(resume))
        seconds = time.perf_counter() - t0
        if code != 0:
            print(f" FAILED after {seconds:.0f} s (exit {code}); log: {log}", flush=True)
            raise EmaeError(f"stage {stage.name} failed: {last_error(log)}")
        state.data["done"][stage.name] = seconds
        state.save()
        print(f" done in {seconds:.0f} s", flush=True)
    from results.summary import summary_markdown

    print(f"\n{summary_markdown(root)}\n\nfinished in {time.perf_counter() - started:.0f} s; report: "
          f"{root / 'report' / 'report.md'}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    PipelineConfig.add_arguments(parser)


def main(args: argparse.Namespace) -> int:
    return run_pipeline(PipelineConfig.resolve(args))
