"""``emae report``: the paper's tables rebuilt from its published numbers and our result records.

Writes into ``--out``: ``report.md`` (Markdown), ``report.html`` (one page, figures embedded),
``report.tex`` (booktabs), one CSV of numbers per table (``table_II.csv``, ..., ``cost.csv``, and
``performance.csv`` when there are benchmark records) and the
figures as PNG: ``lp_vs_epochs.png`` (Table XII) and, once there are pre-training records with accuracies,
``accuracy_vs_wall_time.png``; with monitored pre-training records (``emae pretrain --monitor knn``), the time
to kNN accuracy (``time_to_accuracy.csv``, :mod:`results.monitor`) and ``monitor_knn_vs_wall_time.png``.
"""
from __future__ import annotations

import argparse
import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from emae.errors import EmaeError
from emae.records import Record, read_records
from results.cost import cost_frame, cost_table, speedup_summary
from results.monitor import monitor_curves, monitor_targets, time_to_accuracy, time_to_accuracy_table
from results.plots import plot_epochs, plot_monitor, plot_wall_time
from results.summary import summary_frames
from results.tables import OURS, build_tables, load_reference, records_frame

FORMATS = ("md", "html", "tex", "csv")
DEFAULT_RECORDS = Path(__file__).parent / "records"
TITLE = "EMAE: the paper's tables with our results"
LEGEND = ("Rows with source \"paper\" are the published numbers (results/reference/paper_tables.csv); rows with "
          "source \"ours\" come from our result records. Accuracies and APs are percentages. An our-row cell is "
          "the mean over seeds, \"± std\" (sample standard deviation) where there are several, and \"(Δ d)\" its "
          "difference to the published cell of the same method, architecture, pre-training data and epochs, "
          "protocol and metric.")
COST_NOTE = ("From our pretrain records: iterations, images seen and FLOPs per iteration as counted by the engine; "
             "the accuracy is that of the same setting (method, architecture, pre-training data and epochs), "
             "linear probe where there is one, else k-NN. Speed-up: MAE's wall time over the run's, for runs that "
             "reach the accuracy of MAE's longest run (1 marks that MAE run).")

BENCHMARK = "benchmark"  # the protocol of the records that benchmarks/run_all.py writes
PERFORMANCE_NOTE = ("From the benchmark records (`python -m benchmarks.run_all`, protocol benchmark): per figure and "
                    "machine, the median and spread (min-max over the run's rounds) of the latest run, its target and "
                    "whether the median meets it, and the medians of every run recorded, with whether each lies within "
                    "±5 % of their mean (runs agree). \"invalid\": a fraction of the matmul ceiling above 1, whose "
                    "ceiling was measured too low.")
AGREEMENT = 0.05  # the runs of a figure agree when each median lies within 5 % of the mean of the medians

RECONSTRUCTION_NOTE = ("Our rows name the statistics that un-normalised a norm-pix model's predictions: the visible "
                       "patches' (emae eval reconstruction's default, leak-free) or each masked patch's own from the "
                       "original (--unnorm target), which leak what the model never saw into the score. The reference "
                       "data does not record which the paper used, so these rows show no difference to its cells.")
MONITOR_NOTE = ("From the kNN monitor of our pretrain records (emae pretrain --monitor knn: k = 20, T = 0.07 on "
                "held-out Fashion-MNIST training images, not the test set), one run per method: the first point at "
                "which each reaches the target, the untrained backbone's monitored top-1 (step 0) + 5 points or "
                "MAE's final one; wall time is training time, the monitor's own left out; \"-\": never reached.")
SUMMARY_NOTE = ("Every metric our records hold, per pre-training setting: mean over seeds, \"± std\" where there are "
                "several; a pretrain row is the pre-training's wall time in seconds.")


@dataclass
class Section:
    """One table of the report, ready to write, with the figure that follows it, if any."""

    key: str  # the stem of its CSV file
    title: str
    display: pd.DataFrame
    numbers: pd.DataFrame
    notes: list[str]
    figure: Path | None = None


def _g(value: float) -> str:
    return f"{value:.3g}"


def performance_frames(records: list[Record]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(display, numbers) of the benchmark records: one row per figure and machine, from its latest run."""
    rows = []
    for (hardware, name), group in _group_runs(records).items():
        last = group[-1].extra
        medians = [r.value for r in group]
        met = "invalid" if last.get("invalid") else {None: "-", True: "yes", False: "no"}[last.get("met")]
        rows.append({"Figure": f"{last['figure']} {name}", "Hardware": hardware, "Median": last["median"],
                     "Low": last["low"], "High": last["high"], "Unit": last.get("unit", ""),
                     "Target": last.get("target") or "-", "Met": met, "Runs": len(group),
                     "Runs low": min(medians), "Runs high": max(medians), "Runs deviation": _deviation(medians),
                     "Date": group[-1].date})
    numbers = pd.DataFrame(rows, columns=["Figure", "Hardware", "Median", "Low", "High", "Unit", "Target", "Met",
                                          "Runs", "Runs low", "Runs high", "Runs deviation", "Date"])
    display = pd.DataFrame({
        "Figure": numbers["Figure"], "Hardware": numbers["Hardware"],
        "Median": [_g(m) + u for m, u in zip(numbers["Median"], numbers["Unit"])],
        "Spread": [f"{_g(lo)}-{_g(hi)}" for lo, hi in zip(numbers["Low"], numbers["High"])],
        "Target": numbers["Target"], "Met": numbers["Met"],
        "Medians of all runs": [f"{_g(lo)}-{_g(hi)} ({n})" if n > 1 else "-" for lo, hi, n in
                                zip(numbers["Runs low"], numbers["Runs high"], numbers["Runs"])],
        "Runs agree (±5 %)": [("yes" if d <= AGREEMENT else f"no (±{d:.1%})") if n > 1 else "-"
                              for d, n in zip(numbers["Runs deviation"], numbers["Runs"])],
        "Latest run": numbers["Date"]})
    return display, numbers


def _deviation(medians: list[float]) -> float:
    """The largest distance of a run's median from the mean of the medians, relative to that mean."""
    mean = sum(medians) / len(medians)
    return max(abs(m - mean) for m in medians) / abs(mean) if mean else 0.0


def _group_runs(records: list[Record]) -> dict[tuple[str, str], list[Record]]:
    """Benchmark records by (hardware, figure name), oldest run first, in the order the latest run printed them."""
    groups: dict[tuple[str, str], list[Record]] = {}
    last_seen: dict[tuple[str, str], int] = {}
    for i, r in enumerate(sorted(records, key=lambda r: r.date)):  # stable: a run's records keep their order
        key = (r.hardware, r.extra["name"])
        groups.setdefault(key, []).append(r)
        last_seen[key] = i
    return {key: groups[key] for key in sorted(groups, key=last_seen.get)}


def build_sections(records: list[Record], source: Path, out: Path) -> list[Section]:
    """Every table of the paper with our rows, and the cost of our runs after Table I; the benchmark records, if
    any, in a last section (Performance); draws the figures in ``out``. ``source`` is where the records were read."""
    bench = [r for r in records if r.protocol == BENCHMARK]
    records = [r for r in records if r.protocol != BENCHMARK]
    ours = records_frame(records)
    display, numbers = summary_frames(ours)
    sections = [Section("summary", "Our runs side by side", display, numbers, [SUMMARY_NOTE])]
    for table in build_tables(load_reference(), ours):
        name = table.spec.name
        figure = plot_epochs(table, out / "lp_vs_epochs.png") if name == "XII" else None
        ours_rows = (table.frame["Source"] == OURS).any()
        notes = table.notes + ([RECONSTRUCTION_NOTE] if name in ("XV", "XVI") and ours_rows else [])
        sections.append(Section(f"table_{name}", f"Table {name}: {table.spec.title}", table.display(),
                                table.to_csv_frame(), notes, figure))
        if name == "I":
            cost = cost_frame(ours)
            notes = [COST_NOTE] + speedup_summary(cost) if not cost.empty else [
                f"No records of protocol pretrain in {source} yet."]
            figure = plot_wall_time(cost, ours, out / "accuracy_vs_wall_time.png")
            sections.append(Section("cost", "Our pre-training runs: cost and speed-up (in the spirit of Table I)",
                                    cost_table(cost), cost, notes, figure))
            curves = monitor_curves(ours)
            if not curves.empty:
                targets = monitor_targets(curves)
                reached = time_to_accuracy(curves, targets)
                sections.append(Section("time_to_accuracy", "Our pre-training runs: time to kNN accuracy (the monitor)",
                                        time_to_accuracy_table(reached), reached, [MONITOR_NOTE],
                                        plot_monitor(curves, targets, out / "monitor_knn_vs_wall_time.png")))
    if bench:
        display, numbers = performance_frames(bench)
        sections.append(Section("performance", "Performance: the benchmarks", display, numbers, [PERFORMANCE_NOTE]))
    return sections


def write_markdown(sections: list[Section], path: Path) -> None:
    parts = [f"# {TITLE}\n\n{LEGEND}\n"]
    for s in sections:
        parts.append(f"## {s.title}\n")
        if not s.display.empty:
            parts.append(s.display.to_markdown(index=False, disable_numparse=True) + "\n")
        parts += [f"- {note}" for note in s.notes] + ([""] if s.notes else [])
        if s.figure:
            parts.append(f"![{s.figure.stem}]({s.figure.name})\n")
    path.write_text("\n".join(parts), encoding="utf-8")


def _highlight_ours(row: pd.Series) -> list[str]:
    return ["background-color: #fdf1dc" if row.get("Source") == OURS else ""] * len(row)


def write_html(sections: list[Section], path: Path) -> None:
    css = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
           "table{border-collapse:collapse;font-size:0.9em;margin:0.5em 0}"
           "th,td{border-bottom:1px solid #ccc;padding:2px 8px;text-align:left}"
           "p.note{font-size:0.85em;color:#444;margin:0.2em 0}")
    body = [f"<h1>{html.escape(TITLE)}</h1>", f"<p>{html.escape(LEGEND)}</p>"]
    for s in sections:
        body.append(f"<h2>{html.escape(s.title)}</h2>")
        if not s.display.empty:
            body.append(s.display.style.hide(axis="index").format(escape="html").apply(_highlight_ours, axis=1)
                        .to_html())
        body += [f'<p class="note">{html.escape(note)}</p>' for note in s.notes]
        if s.figure:
            png = base64.b64encode(s.figure.read_bytes()).decode("ascii")
            body.append(f'<img alt="{s.figure.stem}" src="data:image/png;base64,{png}">')
    page = (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(TITLE)}</title>'
            f"<style>{css}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")
    path.write_text(page, encoding="utf-8")


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex_escape(text: str) -> str:
    return re.sub(r"[\\&%$#_{}~^]", lambda m: _LATEX_SPECIAL[m.group()], text)


def _latex_table(s: Section) -> str:
    """A booktabs table, numeric columns right-aligned."""
    align = "".join("r" if c in s.numbers and pd.api.types.is_numeric_dtype(s.numbers[c]) else "l"
                    for c in s.display.columns)
    styler = s.display.style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis=1)
    table = styler.to_latex(hrules=True, caption=_latex_escape(s.title), label=f"tab:{s.key}", position="htbp",
                            position_float="centering", column_format=align)
    return table.replace("\\centering\n", "\\centering\n\\small\n")


def write_latex(sections: list[Section], path: Path) -> None:
    parts = [r"\documentclass{article}", r"\usepackage[margin=1.5cm,landscape]{geometry}",
             r"\usepackage{booktabs}", r"\usepackage{graphicx}", r"\begin{document}",
             rf"\section*{{{_latex_escape(TITLE)}}}", _latex_escape(LEGEND)]
    for s in sections:
        if s.display.empty:
            parts.append(rf"\subsection*{{{_latex_escape(s.title)}}}")
        else:
            parts.append(_latex_table(s))
        parts += [rf"\noindent{{\footnotesize {_latex_escape(note)}}}\par" for note in s.notes]
        if s.figure:
            parts.append(rf"\begin{{figure}}[htbp]\centering\includegraphics[width=0.6\linewidth]"
                         rf"{{{s.figure.name}}}\end{{figure}}")
    text = "\n".join(parts + [r"\end{document}", ""])
    path.write_text(text.replace("±", r"$\pm$").replace("Δ", r"$\Delta$"), encoding="utf-8")


def write_csv(sections: list[Section], out: Path) -> list[Path]:
    paths = [out / f"{s.key}.csv" for s in sections]
    for s, path in zip(sections, paths):
        s.numbers.to_csv(path, index=False)
    return paths


def parse_formats(text: str) -> list[str]:
    formats = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise EmaeError(f"--format: unknown format(s) {unknown or text!r}; choose from {','.join(FORMATS)}")
    return formats


def write_report(records_path: Path, out: Path, formats: list[str], bench_records: Path | None = None) -> list[Path]:
    """Build every section and write the chosen formats into ``out``; the paths written, figures included.
    ``bench_records``: benchmark records read in addition to those of ``records_path``."""
    records = read_records(records_path) + (read_records(bench_records) if bench_records else [])
    out.mkdir(parents=True, exist_ok=True)
    sections = build_sections(records, records_path, out)
    written = [s.figure for s in sections if s.figure]
    writers = {"md": write_markdown, "html": write_html, "tex": write_latex}
    for fmt in formats:
        if fmt == "csv":
            written += write_csv(sections, out)
        else:
            path = out / f"report.{fmt}"
            writers[fmt](sections, path)
            written.append(path)
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--records", type=Path, default=DEFAULT_RECORDS,
                        help="a records file (JSON lines) or a folder of them (default: %(default)s)")
    parser.add_argument("--bench-records", type=Path, default=None,
                        help="benchmark records (python -m benchmarks.run_all, e.g. runs/bench/records.jsonl) for the "
                             "Performance section, read in addition to --records")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="output folder (default: %(default)s)")
    parser.add_argument("--format", default=",".join(FORMATS),
                        help="comma-separated formats among md, html, tex, csv (default: %(default)s)")


def main(args: argparse.Namespace) -> int:
    for path in write_report(args.records, args.out, parse_formats(args.format), args.bench_records):
        print(path)
    return 0
