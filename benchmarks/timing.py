"""How every benchmark times its code: warmed up, repeated, interleaved, with the spread kept.

:func:`measure` times several functions together. Each first runs ``warmup`` times (not kept; the first
calls pay for allocation, kernel selection and the optimiser's state); a short function is then timed over
a block of calls long enough for the clock (``min_sample_s``). The timed samples are taken in rounds, each
round timing every function once in turn (A, B, then B, A, ...), so that the functions compared see the same
machine state (other load, clock frequency, caches) and a round's ratio compares like with like. A figure
is the ratio of the medians of one run; its spread is the range of the per-round ratios.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch


@dataclass(frozen=True)
class Timing:
    """Seconds per call of one function, one sample per round (in round order)."""

    name: str
    samples: tuple[float, ...]
    calls_per_sample: int = 1

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)

    def seconds(self) -> "Spread":
        return Spread(self.median, self.low, self.high)

    def rate(self, work: float) -> "Spread":
        """``work`` per call divided by the time: a median and the range over the samples (e.g. images/s)."""
        return Spread(work / self.median, work / self.high, work / self.low)


@dataclass(frozen=True)
class Spread:
    """A figure: its median and the range (lowest, highest) it took over the rounds of the run."""

    median: float
    low: float
    high: float

    def __post_init__(self):
        if not self.low <= self.median <= self.high and not any(map(math.isnan, (self.median, self.low, self.high))):
            raise ValueError(f"a spread needs low <= median <= high, got {self.low}, {self.median}, {self.high}")

    @classmethod
    def of(cls, values: Sequence[float], median: float | None = None) -> "Spread":
        """The median of ``values`` (or the given one, computed from other medians) and their range."""
        mid = statistics.median(values) if median is None else median
        return cls(mid, min(min(values), mid), max(max(values), mid))

    def format(self, fmt: str = ".2f", unit: str = "") -> str:
        return f"{self.median:{fmt}}{unit} ({self.low:{fmt}}-{self.high:{fmt}}{unit})"


def ratio(num: Timing, den: Timing) -> Spread:
    """``num / den`` of two timings of the same :func:`measure` call: the ratio of their medians, and the range
    of the ratios of the samples taken in the same round."""
    if len(num.samples) != len(den.samples):
        raise ValueError(f"{num.name} and {den.name} were not timed in the same rounds")
    per_round = [a / b for a, b in zip(num.samples, den.samples)]
    return Spread.of(per_round, median=num.median / den.median)


def cuda_sync() -> Callable[[], None] | None:
    """What waits for queued GPU work before a clock is read; None without CUDA."""
    return torch.cuda.synchronize if torch.cuda.is_available() else None


def measure(fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 2, min_sample_s: float = 0.02,
            clock: Callable[[], float] = time.perf_counter,
            sync: Callable[[], None] | None = None) -> dict[str, Timing]:
    """Time each function of ``fns``: ``warmup`` calls each (interleaved, not kept), then ``repeats`` rounds,
    each timing every function once, in order and in reverse order by turns (A, B, B, A, ...: no function
    always follows the same one, and a drift in the machine's speed weighs on all alike). A function faster
    than ``min_sample_s`` (judged by its last warm-up call) is timed over a block of calls, and its sample is
    the time per call. ``sync`` (default: :func:`cuda_sync`) is called before each clock reading."""
    if repeats < 1 or warmup < 1:
        raise ValueError("measure needs at least one warm-up call and one repeat")
    sync = sync or cuda_sync() or (lambda: None)

    def timed(fn: Callable[[], object], calls: int) -> float:
        sync()
        start = clock()
        for _ in range(calls):
            fn()
        sync()
        return (clock() - start) / calls

    last = {}
    for _ in range(warmup):
        for name, fn in fns.items():
            last[name] = timed(fn, 1)
    calls = {name: max(1, math.ceil(min_sample_s / t)) if t > 0 else 1 for name, t in last.items()}
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(repeats):
        for name, fn in (fns.items() if r % 2 == 0 else reversed(fns.items())):
            samples[name].append(timed(fn, calls[name]))
    return {name: Timing(name, tuple(s), calls[name]) for name, s in samples.items()}
