"""Every CPU benchmark in one run (``make bench``): the figures [1]-[8] of docs/performance.md.

Prints each measurement as it is taken, then a table (figure, median, spread, target, met) and appends one
result record per figure (protocol ``benchmark``) to ``--records``, for ``emae report``, with the run's
settings (:class:`benchmarks.common.BenchSettings`, preset ``cpu``) as ``config.json`` beside them. [7] runs the
pipeline afresh in ``runs/bench/pipeline`` (the previous benchmark's removed first), between two timings of the
matmul rate. About 13 minutes on a 2-core CPU with the defaults, and 15 more for [7]; ``--quick`` leaves [7] out.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from benchmarks import bench_data, bench_memory, bench_pipeline, bench_probe, bench_startup, bench_step
from benchmarks.common import BenchSettings, bench_configs, header, parse_settings
from benchmarks.figures import Figure, records, table
from emae.records import write_records


def finish(figures: list[Figure], started: float, settings: BenchSettings, module: str = "benchmarks.run_all") -> None:
    """Print the table of ``figures``, append their records to ``settings.records`` ("": no records) and save
    ``settings`` beside them as ``config.json``; ``module``: the command that ran, for the records."""
    order = ["[1]", "[2]", "[3]", "[4]", "[5]", "[6]", "[7]", "[8]", "[c]"]
    figures = sorted(figures, key=lambda f: order.index(f.key))
    print("\n" + table(figures))
    for f in figures:
        if f.invalid:
            print(f"{f.key} {f.name}: {f.invalid}")
    if settings.records:
        path = Path(settings.records)
        command = " ".join(["python", "-m", module, *sys.argv[1:]])
        write_records(path, records(figures, time.perf_counter() - started, command), echo=False)
        settings.save(path.parent)
        print(f"\n{len(figures)} records appended to {path}")


def cpu_figures(settings: BenchSettings) -> list[Figure]:
    """The figures [1]-[8] on the CPU ([7] but with ``settings.quick``; the compiled step's with
    ``settings.compile``)."""
    quick = settings.quick
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
    header("fast linear probe: [6]")
    figures += bench_probe.probe_vs_products(settings)
    header("pipeline stage start-up: [8]")
    figures.append(bench_startup.startup_figure(settings))
    if quick:
        print("[7] runs the whole pipeline (about 15 minutes on a 2-core CPU): left out of --quick")
    else:
        header("pipeline wall time against its arithmetic floor: [7]")
        root = Path(bench_pipeline.BENCH_ROOT)
        bench_pipeline.clear_bench_root(root)
        figures.append(bench_pipeline.measure_pipeline(root, settings))
    if settings.compile:
        header("torch.compile")
        for bench in bench_configs("mae", quick):
            figures += bench_step.compiled_vs_eager(bench, settings)
    return figures


def main(argv: list[str] | None = None) -> None:
    settings = parse_settings(argv, "python -m benchmarks.run_all", __doc__, "cpu")
    started = time.perf_counter()
    finish(cpu_figures(settings), started, settings)


if __name__ == "__main__":
    main()
