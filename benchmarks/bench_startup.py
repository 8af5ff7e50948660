"""The start-up of a pipeline stage against a bare ``import torch`` (``python -m benchmarks.bench_startup``).

8. A stage of ``emae pipeline`` starts as a child of the runner's fork server (:mod:`experiments.runner`), which
   imported torch, timm and the suite's modules once. Each of these is timed from its start to its exit, in the
   same interleaved rounds:

   (a) ``python -c "import torch"``, a fresh interpreter: the least a stage started as a process of its own pays;
   (b) the stage ``emae export --help`` started as the runner starts every stage: a ``Process`` of the fork
       server's context running the stage body (:func:`experiments.runner._stage_main`: the caller's folder and
       environment, its output to a log), and, beside it, a child of the fork server that runs nothing;
   (c) the same command as a fresh ``python -m emae export --help`` process, as stages were started before the
       fork server.

   The figure is (b) / (a), target <= 1: a stage should start in far less time than an interpreter takes to
   import torch. The fork server's own start (its interpreter and imports, paid once per run of the pipeline) is
   timed apart: in a fresh process that has imported the runner, from starting the server to the exit of its first
   child. A round runs two fresh interpreters, so the run is capped at :data:`ROUNDS` rounds (``--repeats``, if
   fewer). ``quick``: one warm-up and one round, without (c), the server's start timed once.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from benchmarks.common import BenchSettings, parse_settings
from benchmarks.figures import Figure, Target
from benchmarks.timing import measure, ratio
from emae.errors import EmaeError
from experiments.runner import _context, _stage_main

COMMAND = ("export", "--help")  # a stage that starts, parses its flags and exits
ROUNDS = 5
SERVER_STARTS = 3  # fresh processes timing the fork server's start (1 with quick)
ROOT = Path(__file__).resolve().parent.parent  # where ``python -m emae`` runs
# run in a fresh interpreter: the seconds from starting the fork server to the exit of its first child
SERVER_START = """
import time
from experiments.runner import _context
started = time.perf_counter()
child = _context().Process(target=int)
child.start()
child.join()
print(time.perf_counter() - started)
"""


def fresh(*args: str) -> Callable[[], None]:
    """A function that runs ``python ARGS`` in a fresh process, from the repository's root, to its exit."""
    def run() -> None:
        subprocess.run([sys.executable, *args], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return run


def forked(context, target: Callable, args: tuple = ()) -> Callable[[], None]:
    """A function that runs ``target(*args)`` in a child of the fork server of ``context``, to its exit."""
    def run() -> None:
        child = context.Process(target=target, args=args)
        child.start()
        child.join()
        if child.exitcode != 0:
            raise EmaeError(f"a child of the fork server running {target.__name__} exited with {child.exitcode}")
    return run


def server_start_s(samples: int) -> list[float]:
    """The fork server's start (:data:`SERVER_START`), once in each of ``samples`` fresh processes."""
    return [float(subprocess.run([sys.executable, "-c", SERVER_START], check=True, cwd=ROOT, capture_output=True,
                                 text=True).stdout) for _ in range(samples)]


def startup_figure(settings: BenchSettings) -> Figure:
    """[8]: a stage's start through the fork server over a fresh ``import torch``, timed in the same rounds."""
    quick = settings.quick
    repeats, warmup = (1, 1) if quick else (min(settings.repeats, ROUNDS), settings.warmup)
    starts = server_start_s(1 if quick else SERVER_STARTS)
    print(f"[8] the fork server's start (its interpreter and imports, and its first child; once per pipeline run): "
          f"{statistics.median(starts):.2f} s (median of {len(starts)} fresh processes)", flush=True)
    context = _context()
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "stage.log"
        fns = {"import torch": fresh("-c", "import torch"),
               "stage via the fork server": forked(context, _stage_main, (list(COMMAND), str(log),
                                                                          str(log.with_suffix(".progress")),
                                                                          os.getcwd(), dict(os.environ))),
               "child doing nothing": forked(context, int)}
        if not quick:
            fns["fresh python -m emae"] = fresh("-m", "emae", *COMMAND)
        started = time.perf_counter()
        t = measure(fns, repeats, warmup)
    for name, timing in t.items():
        print(f"[8] {name}: {timing.seconds().format('.3f', ' s')}", flush=True)
    value = ratio(t["stage via the fork server"], t["import torch"])
    print(f"[8] stage start via the fork server / python -c 'import torch': {value.format('.3f')} (target <= 1; "
          f"{time.perf_counter() - started:.0f} s of rounds)", flush=True)
    details = dict(command=" ".join(("emae",) + COMMAND), server_start_s=statistics.median(starts),
                   server_start_samples=starts, seconds={name: timing.median for name, timing in t.items()})
    if not quick:
        old_way = ratio(t["fresh python -m emae"], t["stage via the fork server"])
        print(f"[8] the same stage as a fresh process / via the fork server: {old_way.format('.0f', 'x')}", flush=True)
        details["fresh_over_forked"] = old_way.median
    config = dict(command=details["command"], repeats=repeats, warmup=warmup, quick=quick)
    return Figure("[8]", f"pipeline stage start ({details['command']}) via the fork server / python -c "
                  "'import torch'", "startup_over_import_torch", value, f"{repeats} interleaved rounds", "pipeline",
                  "none", "none", config, Target("<=", 1.0), fmt=".3f", details=details)


def main(argv: list[str] | None = None) -> None:
    from benchmarks.run_all import finish  # here: run_all imports this module

    settings = parse_settings(argv, "python -m benchmarks.bench_startup", __doc__, "cpu")
    started = time.perf_counter()
    finish([startup_figure(settings)], started, settings, "benchmarks.bench_startup")


if __name__ == "__main__":
    main()
