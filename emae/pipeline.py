"""``emae pipeline``: pre-train -> every evaluation whose framework is installed -> report, for MAE and EMAE
side by side.

Each stage is one ``emae`` command run in its own process, with its output in ``ROOT/logs/STAGE.log``;
the display shows one line per stage. ``ROOT/pipeline.json`` records the finished stages, so a re-run
skips them (a killed pre-training continues from its checkpoint, a killed evaluation from its own
state), and the pipeline stops at the first failed stage with that stage's error.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from emae.errors import EmaeError

METHODS = ("mae", "emae")


@dataclass(frozen=True)
class Stage:
    name: str  # e.g. "emae/pretrain"
    argv: tuple[str, ...]  # arguments of the emae command
    needs: str = ""  # a module that must be importable (the stage is skipped otherwise)
    resume_argv: tuple[str, ...] = field(default=())  # added when the stage was started before

    @property
    def available(self) -> bool:
        return not self.needs or importlib.util.find_spec(self.needs) is not None


@dataclass(frozen=True)
class PipelineConfig:
    root: str = "runs/pipeline"
    preset: str = "fmnist-tiny"  # pre-training preset
    eval_preset: str = "fmnist"  # evaluation preset of linprobe / finetune / knn
    seed: int = 0
    pretrain_args: tuple[str, ...] = ()  # extra flags for both pre-trainings (e.g. --epochs 2)
    detection: bool = True
    segmentation: bool = True


def stages(cfg: PipelineConfig) -> list[Stage]:
    root = Path(cfg.root)
    data = root / "data"
    out: list[Stage] = []
    if cfg.detection:
        out.append(Stage("data/detection", ("data", "detection", "--out", str(data / "detection")), "detectron2"))
    if cfg.segmentation:
        out.append(Stage("data/segmentation", ("data", "segmentation", "--out", str(data / "segmentation")), "mmseg"))
    for method in METHODS:
        run = root / method
        ckpt = str(run / "pretrain" / "checkpoint.pth")
        common = ("--checkpoint", ckpt, "--seed", str(cfg.seed))
        out.append(Stage(f"{method}/pretrain", ("pretrain", "--preset", cfg.preset, "--method", method, "--seed",
                         str(cfg.seed), "--output-dir", str(run / "pretrain"), *cfg.pretrain_args),
                         resume_argv=("--resume",)))
        for protocol in ("knn", "linprobe"):  # one feature extraction serves both
            out.append(Stage(f"{method}/{protocol}", ("eval", protocol, *common, "--preset", cfg.eval_preset,
                                                      "--features-dir", str(run / "features"), "--output-dir",
                                                      str(run / protocol))))
        out.append(Stage(f"{method}/finetune", ("eval", "finetune", *common, "--preset", cfg.eval_preset,
                                                "--output-dir", str(run / "finetune"))))
        out.append(Stage(f"{method}/consistency", ("eval", "consistency", *common, "--output-dir",
                                                   str(run / "consistency"))))
        if cfg.detection:
            out.append(Stage(f"{method}/detect", ("eval", "detect", *common, "--config", "vitdet_mask_rcnn_tiny",
                                                  "--data", str(data / "detection"), "--output-dir",
                                                  str(run / "detect")), "detectron2"))
        if cfg.segmentation:
            out.append(Stage(f"{method}/segment", ("eval", "segment", *common, "--config", "upernet_tiny_fmnist",
                                                   "--data", str(data / "segmentation"), "--output-dir",
                                                   str(run / "segment")), "mmseg"))
    out.append(Stage("report", ("report", "--records", str(root), "--out", str(root / "report"))))
    return out


class State:
    """``pipeline.json``: which stages finished (with their wall time) and which were started."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {"done": {}, "started": []}

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


def run_pipeline(cfg: PipelineConfig) -> int:
    root = Path(cfg.root)
    root.mkdir(parents=True, exist_ok=True)
    state = State(root / "pipeline.json")
    plan = stages(cfg)
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
        code = run_stage(stage, log, resume and bool(stage.resume_argv))
        seconds = time.perf_counter() - t0
        if code != 0:
            print(f" FAILED after {seconds:.0f} s (exit {code}); log: {log}", flush=True)
            raise EmaeError(f"stage {stage.name} failed: {last_error(log)}")
        state.data["done"][stage.name] = seconds
        state.save()
        print(f" done in {seconds:.0f} s", flush=True)
    print(f"pipeline finished in {time.perf_counter() - started:.0f} s; report: {root / 'report' / 'report.md'}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = PipelineConfig()
    parser.add_argument("--root", default=defaults.root, help="folder of every stage's output, logs and state")
    parser.add_argument("--preset", default=defaults.preset, help="pre-training preset")
    parser.add_argument("--eval-preset", default=defaults.eval_preset, help="linprobe/finetune/knn preset")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--pretrain-args", default="", help="extra pre-training flags, e.g. '--epochs 2'")
    parser.add_argument("--no-detection", dest="detection", action="store_false", help="skip detectron2 stages")
    parser.add_argument("--no-segmentation", dest="segmentation", action="store_false", help="skip mmseg stages")


def main(args: argparse.Namespace) -> int:
    cfg = PipelineConfig(root=args.root, preset=args.preset, eval_preset=args.eval_preset, seed=args.seed,
                         pretrain_args=tuple(args.pretrain_args.split()), detection=args.detection,
                         segmentation=args.segmentation)
    return run_pipeline(cfg)
