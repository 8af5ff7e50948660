"""Running the stages of ``emae pipeline`` and ``emae study``: one long-lived process, a fresh child per stage.

A stage is one ``emae`` command. It runs in a child of a fork server (``multiprocessing``'s ``forkserver``) that
imported torch, timm and the suite's own modules once (:data:`PRELOAD`), so a stage starts in milliseconds
instead of paying an interpreter and those imports (about 10 s on a 2-core CPU) every time; detectron2 and
mmsegmentation are imported only by the stages that use them. Each child is a process of its own: a stage that
fails or crashes ends only itself, with its output in ``ROOT/logs/STAGE.log``, and its progress
(:mod:`emae.progress`, in ``ROOT/logs/STAGE.progress``) shown on the stage's line while it runs.

``jobs`` stages run at a time (:func:`run_plan`): a stage starts once the earlier stages whose outputs it reads
have finished (:func:`stage_needs`), in plan order, each on ``cores // jobs`` threads (:func:`stage_threads`), so
that the evaluations, most of which keep two cores only partly busy, share the machine. A stage marked
``exclusive`` (a pre-training, whose wall time is a measurement) runs alone on every core, and a stage of no chain
(the report) after every stage before it.

A state file (:class:`State`: ``ROOT/pipeline.json`` for a run in this process, ``ROOT/chains/CHAIN.json`` for a
chain run as a job, :mod:`experiments.executor`) records the finished stages with their time, the started ones
and the run's wall time, so a re-run skips the finished (a killed pre-training continues from its checkpoint, a
killed evaluation from its own state). After a stage fails no other starts: the running ones finish, the failure
is recorded with its log in the state, and :func:`run_plan` raises that stage's error.

The fork server is a fresh interpreter, not a copy of the caller: a process that has already computed with torch
(whose OpenMP threads do not survive a fork) can run stages too.
"""
from __future__ import annotations

import importlib.util
import json
import multiprocessing
import multiprocessing.connection
import os
import shutil
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
    exclusive: bool = False  # runs alone, on every core (a pre-training: its wall time is a measurement)

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


OUTPUT_FLAGS = ("--out", "--output-dir", "--features-dir")  # the flags that name what a stage writes


def chain_of(stage: Stage) -> str:
    """``"mae-ep1-seed0/knn"`` -> ``"mae-ep1-seed0"``; ``""`` for a stage of no chain (``report``)."""
    return stage.name.partition("/")[0] if "/" in stage.name else ""


def outputs(stage: Stage) -> list[str]:
    """What a stage writes: the paths after its :data:`OUTPUT_FLAGS` (a features cache is written by the first
    stage that names it and read by the others)."""
    argv = stage.argv
    return [argv[i + 1] for i, word in enumerate(argv[:-1]) if word in OUTPUT_FLAGS]


def reads(stage: Stage, path: str) -> bool:
    """Whether ``stage`` reads ``path``: one of its arguments (or its ``budget_from``) is that path or lies in it."""
    return any(word == path or word.startswith(path.rstrip("/") + "/") for word in (*stage.argv, stage.budget_from))


def stage_needs(plan: list[Stage]) -> dict[str, tuple[str, ...]]:
    """The earlier stages of ``plan`` each stage waits for: those whose outputs it reads (:func:`reads`); for a
    stage of no chain (the report, which reads what every stage wrote), every earlier stage."""
    return {stage.name: tuple(s.name for s in plan[:i]
                              if not chain_of(stage) or any(reads(stage, out) for out in outputs(s)))
            for i, stage in enumerate(plan)}


def stage_threads(jobs: int) -> int:
    """The threads of a stage when ``jobs`` stages run at a time: this process's cores shared out, at least one;
    0 (torch's default, every core) when they run one at a time."""
    if jobs <= 1:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // jobs)


def _stage_main(argv: list[str], log: str, progress_file: str, cwd: str, environ: dict[str, str],
                threads: int = 0, launch: tuple[str, ...] = ()) -> None:
    """The body of a stage's process: the caller's folder and environment, its output to ``log``, its progress
    to ``progress_file``, ``threads`` threads (0: torch's default), then the command: in this process, or
    ``launch + argv`` in its place (``torchrun``). The stage ignores a scheduler's pre-emption signal
    (:data:`PREEMPT_SIGNAL`): the job's main process handles it and ends the stage."""
    from emae import cli

    signal.signal(PREEMPT_SIGNAL, signal.SIG_IGN)
    # the stage's own processes (DataLoader workers) start as they would in a plain process: forked from it,
    # not from a fork server of their own (the default a fork server's children inherit), which imports again
    multiprocessing.set_start_method("fork", force=True)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(environ)
    if threads:
        import torch

        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # and the programs it starts (torchrun's processes)
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


class StageLines:
    """The lines of the running stages. On a terminal, one line rewritten in place holds every running stage's
    progress, and a stage's end is printed above it; otherwise a stage gets a line when it starts, every
    :data:`PLAIN_EVERY_S` while it runs, and when it ends."""

    def __init__(self, tty: bool):
        self.tty = tty
        self.running: dict[str, list] = {}  # prefix -> [its text, when its last plain line was printed]

    def start(self, prefix: str) -> None:
        self.running[prefix] = ["running ...", time.monotonic()]
        if not self.tty:
            print(f"{prefix} running ...", flush=True)
        self._draw()

    def show(self, prefix: str, text: str) -> None:
        entry = self.running[prefix]
        entry[0] = text
        if self.tty:
            self._draw()
        elif time.monotonic() - entry[1] >= PLAIN_EVERY_S:
            print(f"{prefix} {text}", flush=True)
            entry[1] = time.monotonic()

    def end(self, prefix: str, text: str) -> None:
        del self.running[prefix]
        print(f"\r{prefix} {text}\x1b[K" if self.tty else f"{prefix} {text}", flush=True)
        self._draw()

    def _draw(self) -> None:
        if not self.tty or not self.running:
            return
        if len(self.running) == 1:
            line = next(f"{prefix} {text}" for prefix, (text, _) in self.running.items())
        else:  # several: each prefix without its padding
            line = " | ".join(f"{' '.join(prefix.split())} {text}" for prefix, (text, _) in self.running.items())
        print(f"\r{line[:shutil.get_terminal_size().columns - 1]}\x1b[K", end="", flush=True)


def start_stage(context, stage: Stage, log: Path, resume: bool, threads: int = 0, launch: tuple[str, ...] = ()):
    """Start one stage in a child of the fork server, on ``threads`` threads (0: torch's default; ``launch``: the
    program the child runs the ``emae`` arguments with instead, e.g. ``torchrun ... -m emae``); returns the child."""
    argv = stage.command(resume)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.with_suffix(".progress").unlink(missing_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"$ emae {' '.join(argv)}\n")
    child = context.Process(target=_stage_main, args=(argv, str(log), str(log.with_suffix(".progress")), os.getcwd(),
                                                      dict(os.environ), threads, launch), name=stage.name)
    child.start()
    return child


def running_text(log: Path, started: float) -> str:
    """What a running stage's line says: the progress it reported, or how long it has run."""
    text = progress.describe(progress.read(log.with_suffix(".progress")))
    return f"running: {text}" if text else f"running ... {time.perf_counter() - started:.0f} s"


def run_stage(context, stage: Stage, log: Path, resume: bool, prefix: str, launch: tuple[str, ...] = ()) -> int:
    """Run one stage alone (:func:`start_stage`), its progress on a plain line; returns its exit status
    (negative: killed by that signal)."""
    lines = StageLines(tty=False)
    lines.start(prefix)
    child = start_stage(context, stage, log, resume, launch=launch)
    started = time.perf_counter()
    try:
        while child.is_alive():
            child.join(POLL_S)
            lines.show(prefix, running_text(log, started))
    finally:
        if child.is_alive():  # interrupted: the stage ends with the caller
            child.terminate()
            child.join()
    lines.end(prefix, f"ended (exit {child.exitcode})")
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


@dataclass
class Running:
    """A started stage: its child process, its line's prefix, its log and when it started."""

    stage: Stage
    child: multiprocessing.Process
    prefix: str
    log: Path
    started: float


def startable(pending: list[Stage], running: list[Running], needs: dict[str, tuple[str, ...]],
              unfinished: set[str], jobs: int) -> list[Stage]:
    """The stages of ``pending`` (in plan order) to start now: those whose needs are not ``unfinished``, while
    fewer than ``jobs`` run; an exclusive stage only when none runs, and none after it while it waits."""
    if any(r.stage.exclusive for r in running):
        return []
    chosen: list[Stage] = []
    for stage in pending:
        if len(running) + len(chosen) >= jobs:
            break
        if unfinished.intersection(needs[stage.name]):
            continue
        if stage.exclusive:
            if not running and not chosen:
                chosen.append(stage)
            break
        chosen.append(stage)
    return chosen


def run_plan(context, plan: list[Stage], root: Path, state: State,
             launch: Callable[[Stage], tuple[str, ...]] = lambda stage: (), jobs: int = 1) -> None:
    """Run the stages of ``plan`` in children of the fork server ``context``, ``jobs`` at a time: each once the
    stages it needs (:func:`stage_needs`) finished, in plan order, on :func:`stage_threads` threads, an exclusive
    stage alone on every core. Stages that ``state`` records as done, or whose framework is missing, are skipped;
    started ones continue. ``launch(stage)``: the program a stage runs through (:func:`start_stage`). The state
    keeps each finished stage's seconds and the run's wall time (``wall``, added up over re-runs). After a failed
    stage none starts: the running ones finish, the failure is recorded in ``state`` with its log and raised as
    an EmaeError with its error."""
    needs, threads = stage_needs(plan), stage_threads(jobs)
    prefixes = {s.name: f"[{i:2d}/{len(plan)}] {s.name:<22}" for i, s in enumerate(plan, 1)}
    pending = []
    for stage in plan:
        if state.done(stage.name):
            print(f"{prefixes[stage.name]} done earlier ({state.data['done'][stage.name]:.0f} s)", flush=True)
        elif not stage.available:
            print(f"{prefixes[stage.name]} skipped: {stage.needs} is not installed", flush=True)
        else:
            pending.append(stage)
    unfinished = {s.name for s in pending}
    lines, running, failures = StageLines(sys.stdout.isatty()), [], []
    wall_before, started = state.data.get("wall", 0.0), time.perf_counter()
    try:
        while running or (pending and not failures):
            for stage in [] if failures else startable(pending, running, needs, unfinished, jobs):
                pending.remove(stage)
                resume = stage.name in state.data["started"]
                if not resume:
                    state.data["started"].append(stage.name)
                    state.save()
                log = log_path(root, stage)
                lines.start(prefixes[stage.name])
                child = start_stage(context, stage, log, stage.resumes(resume), 0 if stage.exclusive else threads,
                                    launch(stage))
                running.append(Running(stage, child, prefixes[stage.name], log, time.perf_counter()))
            multiprocessing.connection.wait([r.child.sentinel for r in running], POLL_S)
            for run in list(running):
                if run.child.is_alive():
                    lines.show(run.prefix, running_text(run.log, run.started))
                    continue
                run.child.join()
                running.remove(run)
                failure = _finish(run, state, lines)
                if failure:
                    failures.append(failure)
                else:
                    unfinished.discard(run.stage.name)
                state.data["wall"] = wall_before + time.perf_counter() - started
                state.save()
    finally:
        for run in running:  # interrupted: the running stages end with the run
            run.child.terminate()
            run.child.join()
    if failures:
        raise EmaeError(failures[0])


def _finish(run: Running, state: State, lines: StageLines) -> str:
    """Record an ended stage in ``state`` and print its end; returns its failure ("" if it finished)."""
    seconds, name, code = time.perf_counter() - run.started, run.stage.name, run.child.exitcode
    if code != 0:
        lines.end(run.prefix, f"FAILED after {seconds:.0f} s (exit {code}); log: {run.log}")
        error = last_error(run.log)
        state.data["failed"][name] = {"log": str(run.log), "error": error}
        return f"stage {name} failed: {error}"
    state.data["done"][name] = seconds
    state.data["failed"].pop(name, None)
    lines.end(run.prefix, f"done in {seconds:.0f} s")
    return ""


def run_stages(plan: list[Stage], root: Path, config: CommandConfig, jobs: int = 1,
               summary: Callable[[Path], str] | None = None) -> int:
    """Run the stages, ``jobs`` at a time (:func:`run_plan`), skipping those ``ROOT/pipeline.json`` records as
    done, then print ``summary(root)`` (default: the summary of the records written) and every stage's time;
    raises EmaeError with the failed stage's error. ``config`` (the run's resolved config) is saved as
    ``ROOT/config.json``."""
    context = _context()
    check_stages(plan, root)
    state = State(root / "pipeline.json")
    config.save(root)
    started = time.perf_counter()
    run_plan(context, plan, root, state, jobs=jobs)
    print_summary(root, summary, stage_times(plan, [state]), time.perf_counter() - started)
    return 0


def print_summary(root: Path, summary: Callable[[Path], str] | None, times: str, seconds: float) -> None:
    """The end of a run: ``summary(root)`` (default: the summary of the records), the stage times, the total."""
    if summary is None:
        from results.summary import summary_markdown as summary
    print(f"\n{summary(root)}\n\n{times}\n\nfinished in {seconds:.0f} s; report: {root / 'report' / 'report.md'}")


def stage_times(plan: list[Stage], states: list[State]) -> str:
    """Every finished stage's time (read from the first of ``states`` that has it), as a Markdown table, with
    their sum and, for a run of one state, its wall time (less than the sum where stages ran side by side)."""
    done = [(stage.name, next(s.data["done"][stage.name] for s in states if s.done(stage.name)))
            for stage in plan if any(s.done(stage.name) for s in states)]
    rows = ["| stage | seconds |", "|---|---:|", *(f"| {name} | {seconds:.0f} |" for name, seconds in done),
            f"| all stages | {sum(s for _, s in done):.0f} |"]
    if len(states) == 1 and "wall" in states[0].data:
        rows.append(f"| wall time | {states[0].data['wall']:.0f} |")
    return "\n".join(rows)
