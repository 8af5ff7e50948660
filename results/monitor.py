"""Time to accuracy, from the curves of the kNN monitor (``emae pretrain --monitor knn``): pandas over records.

A monitored pre-training record holds its curve in ``extra["monitor"]["curve"]`` (:mod:`emae.monitor`): one point
per measurement, with the update (``step``), ``images_seen``, cumulative ``flops``, the training wall time
(``wall_time_s``, the monitor's own seconds left out) and the kNN top-1 (``top1``, %) on the monitor's held-out
subset. One run is read per method and variant of each architecture and pre-training data: the one of the most
epochs, then of the lowest seed.

Targets, per architecture and pre-training data: the untrained backbone + 5 points (the mean of those runs'
points at step 0, their initialised models, monitored as the rest) and MAE's final value (the last point of the
MAE run of default settings). A run reaches a target at its first point at or above it: the wall time, images
seen and FLOPs of that point; a run that never does has none.
"""
from __future__ import annotations

import pandas as pd

from results.tables import METHOD_NAMES

MARGIN = 5.0  # points of top-1 above the untrained backbone: the first target
GROUP = ["arch", "pretrain_data"]
RUN = ["method", "variant"]
POINT = ["step", "epoch", "images_seen", "flops", "wall_time_s", "monitor_s", "top1"]
CURVE_COLUMNS = GROUP + RUN + ["pretrain_epochs", "seed"] + POINT
TARGET_COLUMNS = GROUP + ["target", "target_top1"]
FIRST = ["step", "images_seen", "flops", "wall_time_s", "top1"]  # of the first point that reaches a target
REACHED_COLUMNS = TARGET_COLUMNS + RUN + FIRST
COLUMNS = ["Architecture", "Pre-train data", "Target", "Target top-1", "Method", "Step", "Wall time (s)",
           "Images seen", "TFLOPs", "Top-1 then"]


def monitor_curves(ours: pd.DataFrame) -> pd.DataFrame:
    """Every point of one monitored run per (architecture, pre-training data, method, variant) of ``ours``
    (:func:`results.tables.records_frame`), in :data:`CURVE_COLUMNS`, in order of step."""
    pre = ours[(ours["protocol"] == "pretrain") & ours["extra"].map(lambda extra: "monitor" in extra)]
    runs = pre.sort_values(["pretrain_epochs", "seed"], ascending=[False, True], kind="stable")
    runs = runs.drop_duplicates(GROUP + RUN)
    rows = [{**{c: run[c] for c in CURVE_COLUMNS[:6]}, **{c: point[c] for c in POINT}}
            for _, run in runs.iterrows() for point in run["extra"]["monitor"]["curve"]]
    curves = pd.DataFrame(rows, columns=CURVE_COLUMNS)
    order = list(METHOD_NAMES)  # the paper's order of methods, then any other by name
    rank = curves["method"].map(lambda m: order.index(m) if m in order else len(order))
    curves = curves.assign(rank=rank).sort_values(GROUP + ["rank"] + RUN + ["step"], ignore_index=True)
    return curves.drop(columns="rank")


def monitor_targets(curves: pd.DataFrame) -> pd.DataFrame:
    """The targets of each (architecture, pre-training data) of :func:`monitor_curves` (see the module doc), in
    :data:`TARGET_COLUMNS`; a target whose runs are missing (no point at step 0, no MAE run) is left out."""
    rows = []
    for (arch, data), group in curves.groupby(GROUP, sort=True):
        start = group.loc[group["step"] == 0, "top1"]
        if not start.empty:
            rows.append([arch, data, f"untrained + {MARGIN:g}", start.mean() + MARGIN])
        mae = group[(group["method"] == "mae") & (group["variant"] == "")]
        if not mae.empty:
            rows.append([arch, data, "MAE's final", mae["top1"].iloc[-1]])
    return pd.DataFrame(rows, columns=TARGET_COLUMNS)


def time_to_accuracy(curves: pd.DataFrame, targets: pd.DataFrame) -> pd.DataFrame:
    """Per target and run: the first point of the run's curve at or above the target's top-1, in
    :data:`REACHED_COLUMNS` (NaN where the run never reaches it)."""
    rows = []
    for _, target in targets.iterrows():
        group = curves[(curves["arch"] == target["arch"]) & (curves["pretrain_data"] == target["pretrain_data"])]
        for (method, variant), run in group.groupby(RUN, sort=False):
            reached = run.loc[run["top1"] >= target["target_top1"], FIRST]
            first = reached.iloc[0].tolist() if not reached.empty else [float("nan")] * len(FIRST)
            rows.append([*target[TARGET_COLUMNS], method, variant, *first])
    return pd.DataFrame(rows, columns=REACHED_COLUMNS)


def time_to_accuracy_table(reached: pd.DataFrame) -> pd.DataFrame:
    """:func:`time_to_accuracy` for reading: the paper's method names, units in the headers, ``-`` where a run
    never reaches its target."""
    def num(value, fmt: str) -> str:
        return "-" if pd.isna(value) else f"{value:{fmt}}"

    rows = [[r["arch"], r["pretrain_data"], r["target"], f"{r['target_top1']:.2f}",
             METHOD_NAMES.get(r["method"], r["method"]) + (f" ({r['variant']})" if r["variant"] else ""),
             num(r["step"], ".0f"), num(r["wall_time_s"], ".1f"), num(r["images_seen"], ",.0f"),
             num(r["flops"] / 1e12, ".3g"), num(r["top1"], ".2f")] for _, r in reached.iterrows()]
    return pd.DataFrame(rows, columns=COLUMNS)
