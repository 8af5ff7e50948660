"""The figures a benchmark run reports: a table on the terminal and one result record per figure.

The records (protocol ``benchmark``, :class:`emae.records.Record`) keep the median as the value and the
spread, target and whether it was met in ``extra``; ``emae report`` shows them in its Performance section.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field

from benchmarks.timing import Spread
from emae.records import Record, provenance

PROTOCOL = "benchmark"
_COMPARE = {">=": operator.ge, "<=": operator.le}


@dataclass(frozen=True)
class Target:
    op: str  # ">=" or "<="
    bound: float

    def __post_init__(self):
        if self.op not in _COMPARE:
            raise ValueError(f"a target compares with >= or <=, not {self.op!r}")

    def met(self, value: float) -> bool:
        return _COMPARE[self.op](value, self.bound)

    def __str__(self) -> str:
        return f"{self.op} {self.bound:g}"


@dataclass(frozen=True)
class Figure:
    """One measured figure: ``key`` is its number in docs/performance.md ([1] to [5])."""

    key: str
    name: str
    metric: str  # the record's metric, e.g. speedup_vs_reference
    value: Spread
    spread_of: str  # what the range is taken over, e.g. "5 interleaved rounds"
    method: str
    arch: str
    dataset: str
    config: dict
    target: Target | None = None
    unit: str = ""
    fmt: str = ".2f"
    invalid: str = ""  # why the figure cannot be trusted (then it meets no target)
    details: dict = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        if self.target is None or self.invalid:
            return None
        return self.target.met(self.value.median)

    def row(self) -> list[str]:
        met = "invalid" if self.invalid else {None: "-", True: "yes", False: "no"}[self.met]
        return [f"{self.key} {self.name}", f"{self.value.median:{self.fmt}}{self.unit}",
                f"{self.value.low:{self.fmt}}-{self.value.high:{self.fmt}}", str(self.target or "-"), met]

    def record(self, base: dict) -> Record:
        """This figure as a record; ``base`` holds the provenance fields shared by the run's records."""
        extra = dict(figure=self.key, name=self.name, median=self.value.median, low=self.value.low,
                     high=self.value.high, spread_of=self.spread_of, unit=self.unit,
                     target=str(self.target) if self.target else "", met=self.met, invalid=self.invalid,
                     **self.details)
        return Record(method=self.method, arch=self.arch, pretrain_epochs=0, pretrain_data="none", protocol=PROTOCOL,
                      metric=self.metric, value=float(self.value.median), dataset=self.dataset, seed=0,
                      extra=extra, **{**base, "config": self.config})


HEADERS = ["figure", "median", "spread (min-max)", "target", "met"]


def table(figures: list[Figure]) -> str:
    rows = [HEADERS] + [f.row() for f in figures]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADERS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def records(figures: list[Figure], wall_time_s: float, command: str) -> list[Record]:
    """One record per figure; they share the run's provenance (``command``, commit, hardware, date, wall time)."""
    base = {**provenance({}, None, wall_time_s), "command": command}
    return [f.record(base) for f in figures]
