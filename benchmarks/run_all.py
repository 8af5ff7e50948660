"""Every CPU benchmark in one run (``make bench``): the figures [1]-[5] of the README's Performance section.

Prints each measurement as it is taken, then a table (figure, median, spread, target, met) and appends one
result record per figure (protocol ``benchmark``) to ``--records``, for ``emae report``. About 11 minutes on
an unloaded 2-core CPU with the defaults.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchmarks import bench_data, bench_memory, bench_step
from benchmarks.common import Settings, bench_configs, header
from benchmarks.figures import Figure, records, table
from results.records import append_records

DEFAULT_RECORDS = Path("runs/bench/records.jsonl")


def finish(figures: list[Figure], started: float, path: Path | None, module: str = "benchmarks.run_all") -> None:
    """Print the table of ``figures`` and append their records to ``path`` (None: no records); ``module``: the
    command that ran, for the records."""
    order = ["[1]", "[2]", "[3]", "[4]", "[5]", "[c]"]
    figures = sorted(figures, key=lambda f: order.index(f.key))
    print("\n" + table(figures))
    for f in figures:
        if f.invalid:
            print(f"{f.key} {f.name}: {f.invalid}")
    if path is not None:
        command = " ".join(["python", "-m", module, *sys.argv[1:]])
        append_records(path, records(figures, time.perf_counter() - started, command))
        print(f"\n{len(figures)} records appended to {path}")


def cpu_figures(settings: Settings, quick: bool = False, compiled: bool = False) -> list[Figure]:
    figures = []
    header("pre-training step: [1] and [3] MAE")
    for bench in bench_configs("mae", quick):
        figures += bench_step.ours_vs_reference(bench, settings)
    header("pre-training step: [2] and [3] EMAE")
    for bench in bench_configs("emae", quick):
        figures += bench_step.batched_vs_serial(bench, settings)
    header("data pipeline: [4]")
    figures += bench_data.loader_vs_step(bench_configs("emae", quick)[-1], settings)
    header("self-consistency loss memory: [5]")
    figures += bench_memory.memory_figures(*((4, (2, 4)) if quick else ()))
    if compiled:
        header("torch.compile")
        for bench in bench_configs("mae", quick):
            figures += bench_step.compiled_vs_eager(bench, settings)
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__)
    parser.add_argument("--records", type=Path, default=DEFAULT_RECORDS,
                        help="JSON-lines file the records are appended to (default: %(default)s)")
    parser.add_argument("--no-records", action="store_true", help="print the table only")
    parser.add_argument("--repeats", type=int, default=Settings.repeats, help="timed rounds (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=Settings.warmup,
                        help="calls of each function before timing (default: %(default)s)")
    parser.add_argument("--compile", action="store_true",
                        help="also time the step compiled against eager (adds minutes of compilation)")
    parser.add_argument("--quick", action="store_true",
                        help="the tiny preset at batch 32 and small memory cases: checks that the benchmarks run; "
                             "its figures are not the README's")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    figures = cpu_figures(Settings(args.repeats, args.warmup), args.quick, args.compile)
    finish(figures, started, None if args.no_records else args.records)


if __name__ == "__main__":
    main()
