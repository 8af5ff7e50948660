"""What a run of ``emae pipeline`` found, in words: the first lines of its summary.

Read from the records of one pipeline (:func:`results.tables.records_frame`), each sentence compares two
backbones on one protocol, with the difference first:

- MAE against the untrained backbone (kNN and the linear probe);
- EMAE against MAE, at MAE's pre-training wall time when EMAE ran with a time budget;
- EMAE against MAE at equal epochs, from a committed study (``reference``), when the pipeline has no such row;
- fine-tuning of each backbone, and whether it beats the same backbone's linear probe;
- ViTDet and UperNet against the untrained backbone, read against the seed-to-seed spread of that stage
  (``spread``: records of the stage at several seeds). A difference counts when it exceeds twice the larger
  of the two backbones' standard deviations over seeds; otherwise the stage says it cannot tell.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from emae.records import UNTRAINED, read_records
from results.tables import records_frame

DOWNSTREAM = (("vitdet-mask-rcnn", "APb", "ViTDet box AP"), ("upernet", "mIoU", "UperNet mIoU"))
CLASSIFICATION = (("knn", "kNN"), ("linprobe", "linear-probe"))


def _mean(frame: pd.DataFrame, method: str, protocol: str, metric: str = "top1") -> float:
    cells = frame[(frame["method"] == method) & (frame["protocol"] == protocol) & (frame["metric"] == metric)]
    return float(cells["value"].mean()) if len(cells) else math.nan


def _std(frame: pd.DataFrame, method: str, protocol: str, metric: str) -> tuple[float, int]:
    cells = frame[(frame["method"] == method) & (frame["protocol"] == protocol) & (frame["metric"] == metric)]
    return (float(cells["value"].std()) if len(cells) > 1 else math.nan), len(cells)


def _pretrain(frame: pd.DataFrame, method: str) -> pd.Series | None:
    rows = frame[(frame["method"] == method) & (frame["protocol"] == "pretrain")]
    return rows.iloc[-1] if len(rows) else None


def _versus(frame: pd.DataFrame, a: str, b: str, protocols=CLASSIFICATION) -> str | None:
    """``"+8.5 kNN (79.1 against 70.6) and +4.5 linear-probe points (82.3 against 77.8)"``, or None when
    either backbone lacks one of them."""
    parts = []
    for protocol, name in protocols:
        x, y = _mean(frame, a, protocol), _mean(frame, b, protocol)
        if math.isnan(x) or math.isnan(y):
            return None
        parts.append(f"{x - y:+.1f} {name} ({x:.1f} against {y:.1f})")
    return " and ".join(parts) + " points"


def classification_findings(frame: pd.DataFrame) -> list[str]:
    lines = []
    mae = _versus(frame, "mae", UNTRAINED)
    if mae:
        ahead = all(_mean(frame, "mae", p) > _mean(frame, UNTRAINED, p) for p, _ in CLASSIFICATION)
        lines.append(f"MAE {'beats' if ahead else 'does not beat'} the untrained backbone: {mae}.")
    emae = _versus(frame, "emae", "mae")
    if emae:
        pre, ref = _pretrain(frame, "emae"), _pretrain(frame, "mae")
        budget = pre is not None and pre["extra"].get("time_budget_s", 0) or 0
        if pre is not None and ref is not None and budget:
            when = (f"at MAE's pre-training time ({pre['wall_time_s']:.0f} s against MAE's {ref['wall_time_s']:.0f} s: "
                    f"{pre['extra'].get('epochs_run', math.nan):.2f} epochs against MAE's "
                    f"{ref['extra'].get('epochs_run', ref['pretrain_epochs']):.2f})")
        else:
            when = "at equal epochs"
        lines.append(f"EMAE {when}, against MAE: {emae}.")
    return lines


def reference_findings(reference: pd.DataFrame, source: str) -> list[str]:
    """EMAE against MAE at the longest pre-training both have in ``reference`` (means over its seeds)."""
    both = set()
    for epochs, group in reference.groupby("pretrain_epochs"):
        has = {(m, p) for m, p in zip(group["method"], group["protocol"])}
        if all((m, p) in has for m in ("mae", "emae") for p, _ in CLASSIFICATION):
            both.add(int(epochs))
    if not both:
        return []
    epochs = max(both)
    at = reference[(reference["pretrain_epochs"] == epochs) & (reference["variant"] == "")]
    seeds = at[at["method"] == "emae"]["seed"].nunique()
    text = _versus(at, "emae", "mae")
    times = [at[(at["method"] == m) & (at["protocol"] == "pretrain")]["wall_time_s"].mean() for m in ("emae", "mae")]
    cost = f"; EMAE's pre-training took {times[0] / times[1]:.1f}x MAE's time" if not any(map(math.isnan, times)) \
        else ""
    return [f"EMAE at MAE's epochs ({epochs} epochs, {seeds} seed{'s' * (seeds > 1)}, from {source}), against MAE: "
            f"{text}{cost}."]


def finetune_findings(frame: pd.DataFrame) -> list[str]:
    names = {"mae": "MAE", "emae": "EMAE", UNTRAINED: "untrained"}
    values = {m: _mean(frame, m, "finetune") for m in names}
    if all(math.isnan(v) for v in values.values()):
        return []
    shown = ", ".join(f"{names[m]} {v:.1f}" for m, v in values.items() if not math.isnan(v))
    lines = [f"Fine-tuning top-1: {shown}."]
    for method in ("mae", "emae"):
        probe = _mean(frame, method, "linprobe")
        if not math.isnan(values[method]) and not math.isnan(probe):
            word = "above" if values[method] > probe else "not above"
            lines[-1] += f" {names[method]}'s fine-tune is {values[method] - probe:+.1f} ({word}) its linear probe."
    return lines


def downstream_findings(frame: pd.DataFrame, spread: pd.DataFrame | None, source: str) -> list[str]:
    lines = []
    for protocol, metric, name in DOWNSTREAM:
        mae, untrained = _mean(frame, "mae", protocol, metric), _mean(frame, UNTRAINED, protocol, metric)
        if math.isnan(mae) or math.isnan(untrained):
            continue
        emae = _mean(frame, "emae", protocol, metric)
        text = f"{name}: MAE {mae:.1f}, untrained {untrained:.1f} ({mae - untrained:+.1f})"
        text += "" if math.isnan(emae) else f", EMAE {emae:.1f} ({emae - untrained:+.1f})"
        stds = [] if spread is None else [_std(spread, m, protocol, metric) for m in ("mae", UNTRAINED)]
        known = [(s, n) for s, n in stds if not math.isnan(s)]
        if not known:
            lines.append(f"{text}; no seed spread of this stage is recorded ({source}), so it cannot tell them apart.")
            continue
        noise = max(s for s, _ in known)
        seeds = min(n for _, n in known)
        verdict = ("MAE is ahead by more than twice that" if mae - untrained > 2 * noise else
                   "the difference is within twice that: this stage cannot tell them apart")
        lines.append(f"{text}; its seed-to-seed standard deviation is {noise:.2f} ({seeds} seeds, {source}): "
                     f"{verdict}.")
    return lines


def _frame(path: str | Path) -> pd.DataFrame | None:
    return records_frame(read_records(path)) if path and Path(path).exists() else None


def findings(records: str | Path, reference: str | Path = "", spread: str | Path = "") -> list[str]:
    """The sentences for the records under ``records``; ``reference`` and ``spread`` are records folders (or
    empty): a study with EMAE and MAE at equal epochs, and the detection / segmentation stages at several seeds."""
    frame = records_frame(read_records(records))
    lines = classification_findings(frame)
    emae = _pretrain(frame, "emae")
    ref = _frame(reference)
    if emae is not None and emae["extra"].get("time_budget_s") and ref is not None:
        lines += reference_findings(ref, str(reference))
    lines += finetune_findings(frame)
    lines += downstream_findings(frame, _frame(spread), str(spread))
    return lines
