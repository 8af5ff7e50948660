"""The report's figures: 640 x 480 pixel PNGs (6.4 x 4.8 in at 100 dpi), drawn without pyplot's global state."""
from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from results.tables import METHOD_NAMES, OURS, PAPER, Table

SIZE_IN, DPI = (6.4, 4.8), 100
COLORS = {"mae": "C0", "emae": "C1", "parallel": "C2", "random-k": "C3", "complementary": "C4", "consistency": "C5"}


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    return path


def _key(setting: pd.Series) -> tuple[str, str]:
    return setting["pretrain_data"].lower(), setting["arch"]


def plot_epochs(table: Table, path: str | Path) -> Path:
    """Table XII: linear-probe top-1 against pre-training epochs.

    The first panel holds the paper's rows (solid) and ours of the same pre-training data and architecture
    (dashed); each other pre-training data and architecture of ours gets a panel of its own.
    """
    frame, setting = table.frame, table.setting
    paper_key = _key(setting[frame["Source"] == PAPER].iloc[0])
    keys = [paper_key] + sorted({_key(s) for _, s in setting.iterrows()} - {paper_key})
    titles = {}  # the data and architecture as the first row of a panel names them, the paper's first
    for _, s in setting.iterrows():
        titles.setdefault(_key(s), f"{s['pretrain_data']}, {s['arch']}")
    fig = Figure(figsize=SIZE_IN, dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys):
        variant_colors = itertools.cycle(f"C{n}" for n in range(6, 10))
        for i in frame.index[[_key(s) == key for _, s in setting.iterrows()]]:
            method, variant, ours = setting.at[i, "method"], setting.at[i, "variant"], frame.at[i, "Source"] == OURS
            label = " ".join(filter(None, [METHOD_NAMES.get(method, method), variant, "(ours)" if ours else ""]))
            points = [(int(e), frame.at[i, e]) for e in table.value_columns if pd.notna(frame.at[i, e])]
            color = next(variant_colors) if variant else COLORS.get(method)
            ax.plot(*zip(*points), marker="o", color=color, label=label, linestyle="--" if ours else "-")
        ax.set_title(("paper: " if key == paper_key else "ours: ") + titles[key], fontsize="medium")
        ax.set_xlabel("pre-training epochs")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
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
