"""How far a running command has come, for whoever launched it (``emae pipeline`` shows it on the stage's line).

A command reports ``report(done, total, unit)`` as it goes; when the environment names a file in ``EMAE_PROGRESS``
the latest report is written there (at most once a second, and always at the end) as one JSON object
``{"done": 120, "total": 936, "unit": "steps", "phase": "train", "elapsed_s": 31.2, "start": 0}``. ``elapsed_s``
counts from the first report of the phase, whose ``done`` is ``start`` (a resumed run's steps before it), so a
reader can extrapolate an ETA. Without ``EMAE_PROGRESS`` a report does nothing.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

ENV = "EMAE_PROGRESS"
INTERVAL_S = 1.0

_last_write = 0.0
_phase: tuple[str, float, int] = ("", 0.0, 0)  # the current phase, when its first report came, and its done then


def report(done: int, total: int, unit: str = "steps", phase: str = "") -> None:
    """Record that ``done`` of ``total`` ``unit`` of ``phase`` (e.g. "train", "features") are finished."""
    global _last_write, _phase
    path = os.environ.get(ENV)
    if not path:
        return
    now = time.monotonic()
    if _phase[0] != phase or done == 0:
        _phase = (phase, now, int(done))
    if now - _last_write < INTERVAL_S and done < total:
        return
    _last_write = now
    entry = {"done": int(done), "total": int(total), "unit": unit, "phase": phase,
             "elapsed_s": round(now - _phase[1], 3), "start": _phase[2]}
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(entry))
    os.replace(tmp, path)


def read(path: str | os.PathLike) -> dict | None:
    """The latest report in ``path`` (written whole, by a rename), or None when there is none yet."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def describe(entry: dict | None) -> str:
    """``"train 120/936 steps, ~1 min 10 s left"`` (the ETA once a tenth of the phase is done)."""
    if entry is None:
        return ""
    done, total = entry["done"], entry["total"]
    text = f"{entry.get('phase') or 'progress'} {done}/{total} {entry.get('unit', 'steps')}"
    elapsed, start = float(entry.get("elapsed_s", 0.0)), int(entry.get("start", 0))
    if total and done - start >= max(1, total // 10) and done < total and elapsed > 0:
        left = elapsed * (total - done) / (done - start)
        text += f", ~{format_seconds(left)} left"
    return text


def format_seconds(seconds: float) -> str:
    """``75`` -> ``"1 min 15 s"``; ``42`` -> ``"42 s"``."""
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"
