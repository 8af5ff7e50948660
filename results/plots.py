"""The report's figures: 640 x 480 pixel PNGs (6.4 x 4.8 in at 100 dpi), drawn without pyplot's global state."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from results.tables import METHOD_NAMES, OURS, PAPER, Table

SIZE_IN, DPI = (6.4, 4.8), 100
COLORS = {"mae": "C0", "emae": "C1", "parallel": "C2", "random-k": "C3", "complementary": "C4", "consistency": "C5"}


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    return path


def plot_epochs(table: Table, path: str | Path) -> Path:
    """Table XII: linear-probe top-1 against pre-training epochs, the paper's rows and, in a second panel, ours."""
    frame = table.frame
    sources = [s for s in (PAPER, OURS) if (frame["Source"] == s).any()]
    fig = Figure(figsize=SIZE_IN, dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(sources), squeeze=False)[0]
    for ax, source in zip(axes, sources):
        for i, row in frame[frame["Source"] == source].iterrows():
            points = [(int(e), row[e]) for e in table.value_columns if pd.notna(row[e])]
            method = table.method[i]
            label = row["Method"]  # the paper's row names (baseline, ...) as method names
            if method in table.spec.labels:
                label = label.replace(table.spec.labels[method], METHOD_NAMES.get(method, method), 1)
            ax.plot(*zip(*points), marker="o", color=COLORS.get(method), label=label,
                    linestyle="-" if source == PAPER else "--")
        ax.set_title("paper: ImageNet-1K, ViT-B" if source == PAPER else "ours")
        ax.set_xlabel("pre-training epochs")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    axes[0].set_ylabel("linear probing top-1 (%)")
    return _save(fig, Path(path))


def plot_wall_time(cost: pd.DataFrame, path: str | Path) -> Path | None:
    """Top-1 against pre-training wall time for each of our settings (from :func:`results.cost.cost_frame`);
    None, and no file, when no run has both a wall time and an accuracy."""
    runs = cost.dropna(subset=["top1", "wall_time_h"])
    if runs.empty:
        return None
    fig = Figure(figsize=SIZE_IN, dpi=DPI, layout="constrained")
    ax = fig.subplots()
    for (method, arch, data, variant), group in runs.groupby(["method", "arch", "pretrain_data", "variant"]):
        group = group.sort_values("wall_time_h")
        name = METHOD_NAMES.get(method, method) + (f" {variant}" if variant else "")
        ax.plot(group["wall_time_h"], group["top1"], marker="o", color=COLORS.get(method) if not variant else None,
                label=f"{name} ({data}, {arch})")
        for _, run in group.iterrows():
            ax.annotate(f"{run['pretrain_epochs']} ep", (run["wall_time_h"], run["top1"]), fontsize="x-small",
                        textcoords="offset points", xytext=(3, -9))
    ax.set_xlabel("pre-training wall time (h)")
    ax.set_ylabel(f"top-1 (%), {' / '.join(sorted(set(runs['protocol'])))}")
    ax.set_title("accuracy against pre-training time, MAE vs EMAE (ours)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, Path(path))
