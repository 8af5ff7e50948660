"""The cost of our pre-training runs, in the spirit of the paper's Table I.

One row per pre-training setting (method, architecture, pre-training data, variant, epochs) that has a
``pretrain`` record: iterations, images seen and FLOPs per iteration (from the record's ``extra``, as the
engine counted them), wall time, hardware, and the top-1 accuracy of the same setting. A run stopped by its
time budget (``--time-budget-s``) shows the epochs it ran beside those it was set: ``1.15 of 4``.

Join rule: a pre-training record and an accuracy record are joined when they share the setting (method,
architecture, pre-training data, variant, pre-training epochs); seeds are averaged on both sides. The
accuracy is the linear probe's top-1 where the (architecture, pre-training data) group has one, else the
k-NN top-1.

Speed-up: MAE's reference is its longest run (default mask ratio) that has an accuracy. A run of another
method that reaches the reference's accuracy gets the speed-up MAE's wall time / its wall time; the reference
gets 1; a run that does not reach it gets none. The speed-up of EMAE over MAE is that of its fastest run.
"""
from __future__ import annotations

import math

import pandas as pd

from results.tables import METHOD_NAMES

SETTING = ["method", "arch", "pretrain_data", "variant", "pretrain_epochs"]
ACCURACY_PROTOCOLS = ("linprobe", "knn")  # in order of preference
COLUMNS = ["Method", "Architecture", "Pre-train data", "Epochs", "Seeds", "Iterations", "Images seen",
           "GFLOPs / iteration", "Wall time (h)", "Hardware", "Top-1", "Protocol", "Speed-up"]


def _extra(frame: pd.DataFrame, key: str) -> pd.Series:
    return frame["extra"].map(lambda extra: extra.get(key, math.nan)).astype(float)


def _accuracy(ours: pd.DataFrame) -> pd.DataFrame:
    """Top-1 per setting, from the preferred protocol of each (architecture, pre-training data) group."""
    acc = ours[ours["protocol"].isin(ACCURACY_PROTOCOLS) & (ours["metric"] == "top1")].copy()
    acc["rank"] = acc["protocol"].map(ACCURACY_PROTOCOLS.index)
    best = acc.groupby(["arch", "pretrain_data"])["rank"].transform("min")
    acc = acc[acc["rank"] == best]
    return acc.groupby(SETTING, dropna=False).agg(top1=("value", "mean"), protocol=("protocol", "first"))


def _speedups(runs: pd.DataFrame) -> pd.Series:
    speedup = pd.Series(math.nan, index=runs.index)
    for _, group in runs.groupby(["arch", "pretrain_data"]):
        mae = group[(group["method"] == "mae") & (group["variant"] == "") & group["top1"].notna()]
        if mae.empty:
            continue
        ref = mae.sort_values("pretrain_epochs", na_position="first").iloc[-1]
        speedup[ref.name] = 1.0
        reached = group[(group["method"] != "mae") & (group["top1"] >= ref["top1"])]
        speedup[reached.index] = ref["wall_time_h"] / reached["wall_time_h"]
    return speedup


def cost_frame(ours: pd.DataFrame) -> pd.DataFrame:
    """The cost of each pre-training setting with its accuracy and speed-up, as numbers (see the module doc)."""
    pre = ours[ours["protocol"] == "pretrain"]
    if pre.empty:
        return pd.DataFrame(columns=SETTING + ["seeds", "iterations", "images_seen", "epochs_run", "flops_per_iter",
                                               "wall_time_h", "hardware", "top1", "protocol", "speedup"])
    pre = pre.assign(iterations=_extra(pre, "iterations"), images_seen=_extra(pre, "images_seen"),
                     flops_per_iter=_extra(pre, "flops_per_iter"), epochs_run=_extra(pre, "epochs_run"),
                     wall_time_h=pre["wall_time_s"] / 3600)
    runs = pre.groupby(SETTING, sort=True, dropna=False).agg(
        seeds=("seed", "nunique"), iterations=("iterations", "mean"), images_seen=("images_seen", "mean"),
        epochs_run=("epochs_run", "mean"),
        flops_per_iter=("flops_per_iter", "mean"), wall_time_h=("wall_time_h", "mean"),
        hardware=("hardware", lambda h: "; ".join(sorted(set(h)))))
    runs = runs.join(_accuracy(ours)).reset_index()
    order = list(METHOD_NAMES)
    rank = runs["method"].map(lambda m: order.index(m) if m in order else len(order))
    runs = runs.assign(rank=rank).sort_values(["pretrain_data", "arch", "rank", "method", "variant", "pretrain_epochs"])
    runs = runs.drop(columns="rank").reset_index(drop=True)
    return runs.assign(speedup=_speedups(runs))


def cost_table(cost: pd.DataFrame) -> pd.DataFrame:
    """:func:`cost_frame` for reading: the paper's method names, units in the headers, ``-`` where unknown."""
    def num(value, fmt: str) -> str:
        return "-" if pd.isna(value) else f"{value:{fmt}}"

    rows = []
    for _, run in cost.iterrows():
        name = METHOD_NAMES.get(run["method"], run["method"]) + (f" ({run['variant']})" if run["variant"] else "")
        rows.append([name, run["arch"], run["pretrain_data"], _epochs(run), str(run["seeds"]),
                     num(run["iterations"], ",.0f"), num(run["images_seen"], ",.0f"),
                     num(run["flops_per_iter"] / 1e9, ",.1f"),
                     num(run["wall_time_h"], ".2f" if run["wall_time_h"] >= 0.1 else ".4f"), run["hardware"],
                     num(run["top1"], ".1f"), "-" if pd.isna(run["protocol"]) else run["protocol"],
                     num(run["speedup"], ".2f")])
    return pd.DataFrame(rows, columns=COLUMNS)


def _epochs(run: pd.Series) -> str:
    """The epochs a run was set, or, for one its time budget stopped earlier, those it ran of them."""
    if pd.isna(run["pretrain_epochs"]):
        return "-"
    ran = run["epochs_run"]
    if pd.isna(ran) or round(ran, 2) >= run["pretrain_epochs"]:
        return f"{run['pretrain_epochs']:d}"
    return f"{ran:.2f} of {run['pretrain_epochs']:d}"


def _hours(h: float) -> str:
    return f"{h:.2f} h" if h >= 0.1 else f"{h * 3600:.0f} s"


def speedup_summary(cost: pd.DataFrame) -> list[str]:
    """One sentence per (architecture, pre-training data) group with MAE and EMAE runs: how much faster EMAE
    reaches the accuracy of MAE's longest run, or that none of its runs does."""
    lines = []
    for (arch, data), group in cost.groupby(["arch", "pretrain_data"]):
        ref = group[group["speedup"] == 1.0]
        emae = group[(group["method"] == "emae") & group["top1"].notna()]
        if ref.empty or emae.empty:
            continue
        ref = ref.iloc[0]
        mae = (f"the {ref['protocol']} top-1 of MAE ({_epochs(ref)} epochs, {ref['top1']:.1f}, "
               f"{_hours(ref['wall_time_h'])})")
        reached = emae[emae["speedup"].notna()]
        if reached.empty:
            best = emae.sort_values("top1").iloc[-1]
            lines.append(f"{arch} on {data}: no EMAE run reaches {mae}; its best is {best['top1']:.1f} "
                         f"({_epochs(best)} epochs, {_hours(best['wall_time_h'])}).")
            continue
        best = reached.sort_values("speedup").iloc[-1]
        lines.append(f"{arch} on {data}: EMAE ({_epochs(best)} epochs, {_hours(best['wall_time_h'])}) "
                     f"reaches {mae} {best['speedup']:.2f}x faster.")
    return lines
