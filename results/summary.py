"""Our runs side by side: every protocol and metric measured, one column per pre-training setting.

The first section of the report, and what ``emae pipeline`` and ``emae study`` print when they finish.
A cell is the mean over seeds, with ``± std`` (sample) where there are several. The baselines every
accuracy is read against, the untrained backbone and raw pixels, come first.
"""
from __future__ import annotations

import pandas as pd

from emae.records import PIXELS, read_records
from results.tables import BASELINES, METHOD_NAMES, records_frame

ROWS = ["protocol", "metric", "dataset"]
SETTING = ["method", "variant", "pretrain_epochs"]


def _cell(mean: float, std: float, n: int) -> str:
    """Two decimals, or three significant digits below 1 (the consistency metrics are small); the std alike."""
    fmt = ".2f" if abs(mean) >= 1 else ".3g"
    return f"{mean:{fmt}}" + (f" ± {std:{fmt}}" if n > 1 else "")


def _setting_name(method: str, variant: str, epochs, budgeted: bool, arch: str | None) -> str:
    """The column of a setting; a run stopped by its time budget ran at most its config's epochs."""
    name = METHOD_NAMES.get(method, method) + (f" {variant}" if variant else "")
    name += "" if pd.isna(epochs) or method in BASELINES else f", {'≤ ' * budgeted}{epochs} ep"
    return name + (f" ({arch})" if arch else "")


def summary_frames(ours: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(display, numbers) of :func:`results.tables.records_frame`'s cells: rows (protocol, metric, dataset), one
    column per setting (method, variant, pre-training epochs, and architecture where there are several);
    pre-training rows give wall time (s) instead of a metric. ``numbers`` has the mean, std and seed count of
    each cell in long form."""
    if ours.empty:
        return pd.DataFrame(columns=ROWS), pd.DataFrame(columns=ROWS + ["setting", "mean", "std", "n"])
    cells = ours.copy()
    pretrain = cells[cells["protocol"] == "pretrain"].drop_duplicates(SETTING + ["seed"])
    cells = pd.concat([cells[cells["protocol"] != "pretrain"],
                       pretrain.assign(metric="wall time (s)", value=pretrain["wall_time_s"])], ignore_index=True)
    # the architecture is named where the records hold runs of several (raw pixels have none)
    several = cells.loc[cells["method"] != PIXELS, "arch"].nunique() > 1
    archs = [a if several and m != PIXELS else None for m, a in zip(cells["method"], cells["arch"])]
    cells["setting"] = [_setting_name(m, v, e, b, a) for m, v, e, b, a in
                        zip(cells["method"], cells["variant"], cells["pretrain_epochs"], cells["budgeted"], archs)]
    first = cells.drop_duplicates("setting")
    # the baselines, then MAE, then EMAE, then the ablations
    rank = first["method"].map({**{b: i - len(BASELINES) for i, b in enumerate(BASELINES)}, "mae": 0, "emae": 1})
    rank = rank.fillna(2)
    order = first.assign(rank=rank).sort_values(["rank", "method", "variant", "pretrain_epochs"])["setting"].tolist()
    numbers = (cells.groupby(ROWS + ["setting"], dropna=False)["value"]
               .agg(mean="mean", std="std", n="count").reset_index())
    text = numbers.apply(lambda r: _cell(r["mean"], r["std"], r["n"]), axis=1)
    display = (numbers.assign(text=text).pivot(index=ROWS, columns="setting", values="text")
               .reindex(columns=order).fillna("-").reset_index())
    display.columns.name = None
    return display, numbers


def summary_markdown(records_path) -> str:
    """The summary of every record under ``records_path`` as a Markdown table."""
    display, _ = summary_frames(records_frame(read_records(records_path)))
    return display.to_markdown(index=False, disable_numparse=True)
