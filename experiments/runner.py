"""Running the stages of ``emae pipeline`` and ``emae study``: one long-lived process, a fresh child per stage.

A stage is one ``emae`` command. It runs in a child of a fork server (``multiprocessing``'s ``forkserver``) that
imported torch, timm and the suite's own modules once (:data:`PRELOAD`), so a stage starts in milliseconds
instead of paying an interpreter and those imports (about 10 s on a 2-core CPU) every time; detectron2 and
mmsegmentation are imported only by the stages that use them. Each child is a process of its own: a stage that
fails or crashes ends only itself, with its output in ``ROOT/logs/STAGE.log``, and its progress
(:mod:`emae.progress`, in ``ROOT/logs/STAGE.progress``) shown on the stage's line while it runs.

A state file (:class:`State`: ``ROOT/pipeline.json`` for a run in this process, ``ROOT/chains/CHAIN.json`` for a
chain run as a job, :mod:`experiments.executor`) records the finished stages with their time and the started ones,
so a re-run skips the finished (a killed pre-training continues from its checkpoint, a killed evaluation from its
own state); :func:`run_plan` stops at the first failed stage, recording it with its log in the state, and raises
that stage's error.

The fork server is a fresh interpreter, not a copy of the caller: a process that has already computed with torch
(whose OpenMP threads do not survive a fork) can run stages too.
"""
from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from multiprocessing import forkserver
from pathlib import Path
from typing import Callable

from emae import progress
from emae.errors import EmaeError
from emae.settings import CommandConfig

# what the fork server imports once for every stage: the frameworks and modules of the classification stages
PRELOAD = ("torch", "timm", "emae.engine", "emae.export", "evaluation.linprobe", "evaluation.knn",
           "evaluation.finetune", "analysis.consistency", "results.report")
POLL_S = 0.5  # how often a running stage's line is refreshed
PLAIN_EVERY_S = 30.0  # without a terminal: a progress line this often
# the signal a scheduler sends a job before it ends it (submitit's default: SIGUSR2, asked for with sbatch --signal)
PREEMPT_SIGNAL = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))


@dataclass(frozen=True)
class Stage:
    name: str  # e.g. "emae/pretrain"
    argv: tuple[str, ...]  # arguments of the emae command
    needs: str = ""  # a module that must be importable (the stage is skipped otherwise)
    resume_argv: tuple[str, ...] = field(default=())  # added when the stage was started before and left ``state``
    state: str = ""  # the file a started stage continues from (e.g. its checkpoint)
    # a pre-training's records.jsonl whose wall time becomes this stage's --time-budget-s (EMAE at MAE's time)
    budget_from: str = ""

    def resumes(self, started: bool) -> bool:
        """Whether a run of the stage continues an earlier one: it was started and left its state."""
        return started and bool(self.resume_argv) and Path(self.state).is_file()

    @property
    def available(self) -> bool:
        return not self.needs or importlib.util.find_spec(self.needs) is not None

    def command(self, resume: bool) -> list[str]:
        """The ``emae`` arguments of this run of the stage: with ``--time-budget-s`` read from ``budget_from``,
        and ``resume_argv`` when it continues an earlier run."""
        argv = list(self.argv)
        if self.budget_from:
            argv += ["--time-budget-s", f"{budget_seconds(self.budget_from, self.name):.1f}"]
        return argv + list(self.resume_argv if resume else ())


def budget_seconds(records_path: str, stage: str) -> float:
    """The wall time of the pre-training record in ``records_path`` (the budget of ``stage``)."""
    from emae.records import read_records

    path = Path(records_path)
    if not path.is_file():
        raise EmaeError(f"stage {stage} trains for the wall time of the pre-training recorded in {path}, which "
                        f"does not exist: that pre-training has not finished")
    pretrain = [r for r in read_records(path) if r.protocol == "pretrain"]
    if not pretrain:
        raise EmaeError(f"{path}: no pre-training record, so stage {stage} has no time budget")
    return pretrain[-1].wall_time_s


class State:
    """A state file: which stages finished (``done``: name -> seconds), which were started (``started``) and which
    failed last (``failed``: name -> ``{"log", "error"}``, dropped when the stage finishes)."""

    def __init__(self, path: Path):
        self.path = path
        self.data = {"done": {}, "started": [], "failed": {}}
        if path.exists():
            try:
                self.data = json.loads(path.read_text())
            except ValueError as e:
                raise EmaeError(f"{path}: not valid JSON ({e}); remove it to run every stage again") from None
            if not isinstance(self.data, dict) or not {"done", "started"} <= set(self.data):
                raise EmaeError(f"{path}: not a pipeline state (no 'done' and 'started'); remove it to run every "
                                f"stage again")
            self.data.setdefault("failed", {})  # state files written before failures were recorded

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        os.replace(tmp, self.path)

    def done(self, name: str) -> bool:
        return name in self.data["done"]


def _stage_main(argv: list[str], log: str, progress_file: str, cwd: str, environ: dict[str, str],
                launch: tuple[str, ...] = ()) -> None:
    """The body of a stage's process: the caller's folder and environment, its output to ``log``, its progress
    to ``progress_file``, then the command: in this process, or ``launch + argv`` in its place (``torchrun``).
    The stage ignores a scheduler's pre-emption signal (:data:`PREEMPT_SIGNAL`): the job's main process handles
    it and ends the stage."""
    from emae import cli

    signal.signal(PREEMPT_SIGNAL, signal.SIG_IGN)
    # the stage's own processes (DataLoader workers) start as they would in a plain process: forked from it,
    # not from a fork server of their own (the default a fork server's children inherit), which imports again
    multiprocessing.set_start_method("fork", force=True)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(environ)
    sys.stdin = open(os.devnull)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for stream in (1, 2):
        os.dup2(fd, stream)
    os.close(fd)
    os.environ[progress.ENV] = progress_file
    if launch:
        os.execvp(launch[0], [*launch, *argv])
    code = cli.main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


def _context():
    """The fork-server context, its server started now (it imports :data:`PRELOAD` while the caller goes on)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))
    forkserver.ensure_running()
    return context


class StageLine:
    """A running stage's line: rewritten in place on a terminal, a line every :data:`PLAIN_EVERY_S` otherwise."""

    def __init__(self, prefix: str, tty: bool):
        self.prefix, self.tty, self.last = prefix, tty, time.monotonic()
        self.show("running ...")

    def show(self, text: str) -> None:
        if self.tty:
            print(f"\r{self.prefix} {text}\x1b[K", end="", flush=True)
        elif text == "running ..." or time.monotonic() - self.last >= PLAIN_EVERY_S:
            print(f"{self.prefix} {text}", flush=True)
            self.last = time.monotonic()

    def end(self, text: str) -> None:
        print(f"\r{self.prefix} {text}\x1b[K" if self.tty else f"{self.prefix} {text}", flush=True)


def run_stage(context, stage: Stage, log: Path, resume: bool, line: StageLine, launch: tuple[str, ...] = ()) -> int:
    """Run one stage in a child of the fork server (``launch``: the program the child runs the ``emae`` arguments
    with instead, e.g. ``torchrun ... -m emae``); returns its exit status (negative: killed by that signal)."""
    argv = stage.command(resume)
    log.parent.mkdir(parents=True, exist_ok=True)
    progress_file = log.with_suffix(".progress")
    progress_file.unlink(missing_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"$ emae {' '.join(argv)}\n")
    child = context.Process(target=_stage_main, args=(argv, str(log), str(progress_file), os.getcwd(),
                                                      dict(os.environ), launch), name=stage.name)
    child.start()
    t0 = time.perf_counter()
    try:
        while child.is_alive():
            child.join(POLL_S)
            text = progress.describe(progress.read(progress_file))
            line.show(f"running: {text}" if text else f"running ... {time.perf_counter() - t0:.0f} s")
    finally:
        if child.is_alive():  # interrupted: the stage ends with the pipeline
            child.terminate()
            child.join()
    return child.exitcode


def last_error(log: Path) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    return errors[-1] if errors else "\n".join(lines[-15:])


def pretrain_config(stage: Stage):
    """The resolved :class:`~emae.config.PretrainConfig` of a pre-training stage (an EmaeError for a bad flag)."""
    from emae import engine
    from emae.cli import CommandParser

    parser = CommandParser(prog=f"emae pretrain (stage {stage.name})")
    engine.add_arguments(parser)
    return engine.resolve_config(parser.parse_args(stage.argv[1:]))


def check_stages(plan: list[Stage], root: Path) -> None:
    """What can be checked before the first stage runs: every pre-training's flags and preset, every
    evaluation's preset, and the records already under ``root`` (which the report will read)."""
    from emae.records import read_records
    from evaluation.presets import PROTOCOLS, preset_values

    for stage in plan:
        if stage.argv[:1] == ("pretrain",):
            pretrain_config(stage)
        elif stage.argv[:1] == ("eval",) and stage.argv[1] in PROTOCOLS and "--preset" in stage.argv:
            preset_values(stage.argv[stage.argv.index("--preset") + 1], stage.argv[1])
    if root.is_dir():
        read_records(root)


def log_path(root: Path, stage: Stage) -> Path:
    """Where the output of ``stage`` goes: ``ROOT/logs/STAGE.log`` (``/`` in its name spelt ``-``)."""
    return root / "logs" / f"{stage.name.replace('/', '-')}.log"


def run_plan(context, plan: list[Stage], root: Path, state: State,
             launch: Callable[[Stage], tuple[str, ...]] = lambda stage: ()) -> None:
    """Run the stages in order in children of the fork server ``context``, skipping those ``state`` records as
    done and continuing the started ones; ``launch(stage)``: the program a stage runs through (:func:`run_stage`).
    A failed stage is recorded in ``state`` with its log and raised as an EmaeError with its error."""
    tty = sys.stdout.isatty()
    for index, stage in enumerate(plan, 1):
        prefix = f"[{index:2d}/{len(plan)}] {stage.name:<22}"
        if state.done(stage.name):
            print(f"{prefix} done earlier ({state.data['done'][stage.name]:.0f} s)", flush=True)
            continue
        if not stage.available:
            print(f"{prefix} skipped: {stage.needs} is not installed", flush=True)
            continue
        resume = stage.name in state.data["started"]
        if not resume:
            state.data["started"].append(stage.name)
            state.save()
        log = log_path(root, stage)
        line = StageLine(prefix, tty)
        t0 = time.perf_counter()
        code = run_stage(context, stage, log, stage.resumes(resume), line, launch(stage))
        seconds = time.perf_counter() - t0
        if code != 0:
            line.end(f"FAILED after {seconds:.0f} s (exit {code}); log: {log}")
            error = last_error(log)
            state.data["failed"][stage.name] = {"log": str(log), "error": error}
            state.save()
            raise EmaeError(f"stage {stage.name} failed: {error}")
        state.data["done"][stage.name] = seconds
        state.data["failed"].pop(stage.name, None)
        state.save()
        line.end(f"done in {seconds:.0f} s")


def run_stages(plan: list[Stage], root: Path, config: CommandConfig,
               summary: Callable[[Path], str] | None = None) -> int:
    """Run the stages in order (:func:`run_plan`), skipping those ``ROOT/pipeline.json`` records as done, then
    print ``summary(root)`` (default: the summary of the records written) and every stage's time;
    raises EmaeError with the failed stage's error. ``config`` (the run's resolved config) is saved as
    ``ROOT/config.json``."""
    context = _context()
    check_stages(plan, root)
    state = State(root / "pipeline.json")
    config.save(root)
    started = time.perf_counter()
    run_plan(context, plan, root, state)
    print_summary(root, summary, stage_times(plan, [state]), time.perf_counter() - started)
    return 0


def print_summary(root: Path, summary: Callable[[Path], str] | None, times: str, seconds: float) -> None:
    """The end of a run: ``summary(root)`` (default: the summary of the records), the stage times, the total."""
    if summary is None:
        from results.summary import summary_markdown as summary
    print(f"\n{summary(root)}\n\n{times}\n\nfinished in {seconds:.0f} s; report: {root / 'report' / 'report.md'}")


def stage_times(plan: list[Stage], states: list[State]) -> str:
    """Every finished stage's time (read from the first of ``states`` that has it), as a Markdown table, with
    the total."""
    done = [(stage.name, next(s.data["done"][stage.name] for s in states if s.done(stage.name)))
            for stage in plan if any(s.done(stage.name) for s in states)]
    rows = ["| stage | seconds |", "|---|---:|", *(f"| {name} | {seconds:.0f} |" for name, seconds in done),
            f"| all stages | {sum(s for _, s in done):.0f} |"]
    return "\n".join(rows)
