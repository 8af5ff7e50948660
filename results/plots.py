"""The report's figures: 640 x 480 pixel PNGs (6.4 x 4.8 in at 100 dpi), drawn without pyplot's global state."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from emae.errors import EmaeError
from results.tables import BASELINES, METHOD_NAMES, OURS, PAPER, Table

SIZE_IN, DPI = (6.4, 4.8), 100
COLORS = {"mae": "C0", "emae": "C1", "parallel": "C2", "random-k": "C3", "complementary": "C4", "consistency": "C5"}
MARKERS = {"mae": "o", "emae": "s", "parallel": "^", "random-k": "D", "complementary": "v", "consistency": "P"}
# what the other series (variants, unknown methods) take, in order; grey is kept for the baselines
SPARE_STYLES = tuple(zip(("C6", "C8", "C9", "#000080", "#808000", "#800000", "#008080", "#ff00ff"),
                         ("X", "*", "<", ">", "h", "p", "d", "8")))
BASELINE_LINES = {"untrained": dict(color="0.2", linestyle=":"), "pixels": dict(color="0.5", linestyle="-.")}
MIN_SPAN = 4.0  # points of top-1: the least y-range of a panel, so a fraction of a point never fills it


def series_styles(series: dict[str, str]) -> dict[str, dict]:
    """The colour and marker of every series of one figure, by name (``series``: name -> method). A series
    named after its method alone (``MAE``, ``EMAE``) gets that method's own (``COLORS``, ``MARKERS``), the same
    in every figure; every other (``EMAE w_sc=0.3``) one of ``SPARE_STYLES``, in the order of the names. No two
    series of a figure share a colour or a marker.

    Raises:
        EmaeError: more series than there are styles to tell them apart.
    """
    own = {name: method for name, method in series.items()
           if method in COLORS and name == METHOD_NAMES.get(method, method)}
    rest = sorted(set(series) - set(own))
    if len(rest) > len(SPARE_STYLES):
        raise EmaeError(f"{len(series)} series in one figure, more than its {len(COLORS) + len(SPARE_STYLES)} "
                        f"colours tell apart; report fewer settings at once: {sorted(series)}")
    styles = {name: dict(color=COLORS[method], marker=MARKERS[method]) for name, method in own.items()}
    styles.update({name: dict(color=color, marker=marker) for name, (color, marker) in zip(rest, SPARE_STYLES)})
    return styles


def _series_name(method: str, variant: str) -> str:
    return METHOD_NAMES.get(method, method) + (f" {variant}" if variant else "")


def _baseline_line(ax, method: str, mean: float, std: float, label: str) -> tuple[float, float]:
    """A baseline as a horizontal reference line across ``ax``, its seeds' spread (± std) as a band; returns
    the y-range it covers."""
    style = BASELINE_LINES[method]
    ax.axhline(mean, label=label, linewidth=1.2, **style)
    if std > 0:
        ax.axhspan(mean - std, mean + std, color=style["color"], alpha=0.12, linewidth=0)
    return mean - std, mean + std


def _set_y_range(ax, low: float, high: float) -> None:
    """A y-range that holds [low, high] and spans at least ``MIN_SPAN``, with a margin."""
    span = max(high - low, MIN_SPAN)
    middle = (low + high) / 2
    ax.set_ylim(middle - 0.55 * span, middle + 0.55 * span)


def _figure_legend(fig: Figure, columns: int = 3) -> None:
    """One legend for the figure, below its panels (off the data): each label once."""
    entries = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    fig.legend(list(entries.values()), list(entries), loc="outside lower center", ncols=columns,
               fontsize="small", frameon=False)


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    return path


def _key(setting: pd.Series) -> tuple[str, str]:
    return setting["pretrain_data"].lower(), setting["arch"]


def epochs_figure(table: Table) -> Figure:
    """Table XII: linear-probe top-1 against pre-training epochs, as a figure.

    The paper's rows get a panel, and each pre-training data and architecture of ours a panel of its own, two
    panels a row; error bars are one standard deviation over the seeds of a cell that has several. Our
    baselines are horizontal reference lines (± std bands) in the panels of our runs: the untrained backbone
    in the panel of its data and architecture, raw pixels (which have neither) in every panel of ours. Every
    series has its own colour and marker (:func:`series_styles`), the legend sits below the panels, and each
    panel's y-range spans at least ``MIN_SPAN`` points around its data and baselines.

    Raises:
        EmaeError: a baseline row with more than one cell (a baseline is not trained for epochs).
    """
    frame, setting = table.frame, table.setting
    panels: dict[tuple[str, str, str], list] = {}  # (source, data, arch) -> rows drawn as series
    untrained: dict[tuple[str, str, str], list] = {}
    pixels = []
    titles = {}  # the data and architecture as the first row of a panel names them
    for i in frame.index:
        method, source = setting.at[i, "method"], frame.at[i, "Source"]
        key = (source, *_key(setting.loc[i]))
        titles.setdefault(key, f"{source}: {setting.at[i, 'pretrain_data']}\n{setting.at[i, 'arch']}")
        if source == OURS and method in BASELINES:
            (pixels if method == "pixels" else untrained.setdefault(key, [])).append(i)
        else:
            panels.setdefault(key, []).append(i)
    for key in untrained:
        panels.setdefault(key, [])
    if pixels and not any(key[0] == OURS for key in panels):  # raw pixels alone: a panel of their own
        panels[(OURS, *_key(setting.loc[pixels[0]]))] = []
    keys = sorted(panels, key=lambda k: (k[0] != PAPER, k))
    names = {i: _series_name(setting.at[i, "method"], setting.at[i, "variant"]) for rows in panels.values()
             for i in rows}
    styles = series_styles({names[i]: setting.at[i, "method"] for i in names})
    columns = min(2, len(keys))
    fig = Figure(figsize=SIZE_IN, dpi=DPI, layout="constrained")
    axes = fig.subplots(math.ceil(len(keys) / columns), columns, squeeze=False).flatten()
    for ax in axes[len(keys):]:
        fig.delaxes(ax)
    for ax, key in zip(axes, keys):
        low, high = math.inf, -math.inf
        for i in panels[key]:
            cells = [e for e in table.value_columns if pd.notna(frame.at[i, e])]
            x = [int(e) for e in cells]
            y = [frame.at[i, e] for e in cells]
            err = [table.std.at[i, e] if table.count.at[i, e] > 1 else 0.0 for e in cells]
            style = styles[names[i]]
            ax.plot(x, y, label=names[i], **style)
            ax.errorbar(x, y, yerr=err, fmt="none", ecolor=style["color"], capsize=3, linewidth=1)
            low, high = min([low] + [v - d for v, d in zip(y, err)]), max([high] + [v + d for v, d in zip(y, err)])
        for i in (untrained.get(key, []) + pixels) if key[0] == OURS else []:
            cells = [e for e in table.value_columns if pd.notna(frame.at[i, e])]
            if len(cells) != 1:
                raise EmaeError(f"Table {table.spec.name}: the baseline {frame.at[i, frame.columns[0]]!r} has cells at "
                                f"{cells} epochs; a baseline has one")
            (cell,) = cells
            std = table.std.at[i, cell] if table.count.at[i, cell] > 1 else 0.0
            span = _baseline_line(ax, setting.at[i, "method"], frame.at[i, cell], std,
                                  METHOD_NAMES[setting.at[i, "method"]])
            low, high = min(low, span[0]), max(high, span[1])
        _set_y_range(ax, low, high)
        ax.set_title(titles[key], fontsize="small")
        ax.set_xlabel("pre-training epochs")
        ax.grid(alpha=0.3)
    for ax in axes[:len(keys):columns]:
        ax.set_ylabel("linear probing top-1 (%)")
    _figure_legend(fig)
    return fig


def plot_epochs(table: Table, path: str | Path) -> Path:
    """:func:`epochs_figure` written to ``path``."""
    return _save(epochs_figure(table), Path(path))


def _top1_std(ours: pd.DataFrame, run: pd.Series) -> float:
    """The standard deviation over seeds (sample) of a cost row's top-1; 0 for one seed."""
    same = ours[(ours["method"] == run["method"]) & (ours["arch"] == run["arch"])
                & (ours["pretrain_data"] == run["pretrain_data"]) & (ours["variant"] == run["variant"])
                & (ours["pretrain_epochs"] == run["pretrain_epochs"]).fillna(False)
                & (ours["protocol"] == run["protocol"]) & (ours["metric"] == "top1")]
    return float(same["value"].std()) if len(same) > 1 else 0.0


def wall_time_figure(cost: pd.DataFrame, ours: pd.DataFrame) -> Figure | None:
    """Top-1 against pre-training wall time for each of our settings (``cost`` from
    :func:`results.cost.cost_frame`, ``ours`` the records frame it was made from), as a figure; None when no
    run has both a wall time and an accuracy.

    Error bars are one standard deviation of the top-1 over seeds. The baselines measured with the same
    protocol are horizontal reference lines (± std bands): the untrained backbone of each architecture and
    pre-training data, raw pixels on the runs' evaluation data. Series styles, legend and y-range as in
    :func:`epochs_figure`.
    """
    runs = cost.dropna(subset=["top1", "wall_time_h"])
    if runs.empty:
        return None
    groups = runs[["pretrain_data", "arch", "protocol"]].drop_duplicates()
    several = len(groups[["pretrain_data", "arch"]].drop_duplicates()) > 1
    settings = runs.groupby(["method", "arch", "pretrain_data", "variant"], sort=False)
    names = {key: _series_name(key[0], key[3]) + (f" ({key[2]}, {key[1]})" if several else "")
             for key in settings.groups}
    styles = series_styles({name: key[0] for key, name in names.items()})
    fig = Figure(figsize=SIZE_IN, dpi=DPI, layout="constrained")
    ax = fig.subplots()
    low, high = math.inf, -math.inf
    for key, group in settings:
        group = group.sort_values("wall_time_h")
        err = [_top1_std(ours, run) for _, run in group.iterrows()]
        style = styles[names[key]]
        ax.plot(group["wall_time_h"], group["top1"], label=names[key], **style)
        ax.errorbar(group["wall_time_h"], group["top1"], yerr=err, fmt="none", ecolor=style["color"], capsize=3,
                    linewidth=1)
        low, high = min(low, min(group["top1"] - err)), max(high, max(group["top1"] + err))
        for _, run in group.iterrows():
            ax.annotate(f"{run['pretrain_epochs']} ep", (run["wall_time_h"], run["top1"]), fontsize="x-small",
                        textcoords="offset points", xytext=(4, -10))
    accuracy = ours[ours["metric"] == "top1"]
    for _, (data, arch, protocol) in groups.iterrows():
        measured = accuracy[accuracy["protocol"] == protocol]
        run_data = set(measured.loc[(measured["arch"] == arch) & (measured["pretrain_data"] == data), "dataset"])
        for method, same in (("untrained", (measured["arch"] == arch) & (measured["pretrain_data"] == data)),
                             ("pixels", measured["dataset"].isin(run_data))):
            values = measured.loc[same & (measured["method"] == method), "value"]
            if values.empty:
                continue
            label = METHOD_NAMES[method] + (f" ({data}, {arch})" if several else "")
            std = float(values.std()) if len(values) > 1 else 0.0
            span = _baseline_line(ax, method, float(values.mean()), std, label)
            low, high = min(low, span[0]), max(high, span[1])
    _set_y_range(ax, low, high)
    return _finish(fig, ax, "pre-training wall time (h)", f"top-1 (%), {' / '.join(sorted(set(runs['protocol'])))}",
                   "accuracy against pre-training time (ours)", None if several else groups.iloc[0])


def _finish(fig: Figure, ax, xlabel: str, ylabel: str, title: str, only: pd.Series | None) -> Figure:
    """Axis labels, the title (with the pre-training data and architecture of ``only``, the one row's, when the
    figure has runs of one), the grid and the legend off the data."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title + ("" if only is None else f"\n{only['pretrain_data']}, {only['arch']}"), fontsize="medium")
    ax.grid(alpha=0.3)
    _figure_legend(fig)
    return fig


def plot_wall_time(cost: pd.DataFrame, ours: pd.DataFrame, path: str | Path) -> Path | None:
    """:func:`wall_time_figure` written to ``path``; None, and no file, when there is no figure."""
    fig = wall_time_figure(cost, ours)
    return _save(fig, Path(path)) if fig is not None else None


def monitor_figure(curves: pd.DataFrame, targets: pd.DataFrame) -> Figure | None:
    """The kNN monitor's top-1 against pre-training wall time, one line per run of ``curves``
    (:func:`results.monitor.monitor_curves`), the ``targets`` (:func:`results.monitor.monitor_targets`) as
    dotted horizontal lines; None when there is no curve. Series styles and legend as in :func:`epochs_figure`."""
    if curves.empty:
        return None
    several = len(curves[["pretrain_data", "arch"]].drop_duplicates()) > 1
    runs = curves.groupby(["method", "variant", "pretrain_data", "arch"], sort=False)
    names = {key: _series_name(key[0], key[1]) + (f" ({key[2]}, {key[3]})" if several else "") for key in runs.groups}
    styles = series_styles({name: key[0] for key, name in names.items()})
    fig = Figure(figsize=SIZE_IN, dpi=DPI, layout="constrained")
    ax = fig.subplots()
    for key, run in runs:
        ax.plot(run["wall_time_s"], run["top1"], label=names[key], markersize=4, **styles[names[key]])
    for _, target in targets.iterrows():
        label = target["target"] + (f" ({target['pretrain_data']}, {target['arch']})" if several else "")
        ax.axhline(target["target_top1"], color="0.4", linestyle=":", linewidth=1)
        ax.annotate(label, (0, target["target_top1"]), xycoords=("axes fraction", "data"), fontsize="x-small",
                    textcoords="offset points", xytext=(3, 2), color="0.3")
    return _finish(fig, ax, "pre-training wall time (s), the monitor's own left out",
                   "kNN top-1 (%), held-out training images", "the kNN monitor during pre-training (ours)",
                   None if several else curves.iloc[0])


def plot_monitor(curves: pd.DataFrame, targets: pd.DataFrame, path: str | Path) -> Path | None:
    """:func:`monitor_figure` written to ``path``; None, and no file, when there is no figure."""
    fig = monitor_figure(curves, targets)
    return _save(fig, Path(path)) if fig is not None else None
