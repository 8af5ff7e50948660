"""The matrix-product ceiling a step is measured against, and the fraction of it the step reaches.

The FLOPs of a step are the engine's count (:func:`emae.engine.flops_per_iteration`, torch's FLOP counter
on the meta device). While it counts, :class:`GemmRecorder` notes every matrix product of the step (shape
and operand layout); the ceiling is the rate of those same products, each timed on its own, and of a large
square product, all timed in the same rounds as the step. The fraction is taken against the higher ceiling.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.timing import Spread, Timing
from emae.config import PretrainConfig
from emae.engine import flops_per_iteration

aten = torch.ops.aten


@dataclass(frozen=True)
class Gemm:
    """One matrix product: ``batch`` products of (m, k) by (k, n); an operand marked transposed is stored
    column-major (a transposed view, as in most backward products)."""

    op: str  # mm, addmm or bmm
    batch: int
    m: int
    k: int
    n: int
    a_transposed: bool = False
    b_transposed: bool = False

    @property
    def flops(self) -> int:
        return 2 * self.batch * self.m * self.k * self.n

    def __str__(self) -> str:
        t = "".join(("T" if self.a_transposed else "N", "T" if self.b_transposed else "N"))
        return f"{self.op}[{self.batch}x]({self.m}, {self.k}, {self.n}) {t}"


def _column_major(t: torch.Tensor) -> bool:
    return t.stride(-2) == 1 and t.stride(-1) != 1


class GemmRecorder(TorchDispatchMode):
    """Counts the matrix products (``mm``, ``addmm``, ``bmm``, ``baddbmm``) run under it, by :class:`Gemm`."""

    def __init__(self):
        super().__init__()
        self.gemms: Counter[Gemm] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func.overloadpacket
        if packet in (aten.mm, aten.addmm, aten.bmm, aten.baddbmm):
            a, b = args[1:3] if packet in (aten.addmm, aten.baddbmm) else args[:2]
            batched = packet in (aten.bmm, aten.baddbmm)
            self.gemms[Gemm("bmm" if batched else packet.__name__, a.shape[0] if batched else 1, a.shape[-2],
                            a.shape[-1], b.shape[-1], _column_major(a), _column_major(b))] += 1
        return func(*args, **(kwargs or {}))


def step_gemms(cfg: PretrainConfig, batch: int) -> tuple[int, Counter[Gemm]]:
    """The FLOPs of one forward + backward of ``cfg``'s model on a batch, as the engine counts them, and the
    matrix products among them, counted by shape."""
    recorder = GemmRecorder()
    flops = flops_per_iteration(cfg, batch, observer=recorder)
    return flops, recorder.gemms


def product(gemm: Gemm, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Callable[[], object]:
    """A function that runs ``gemm`` once on random operands of its shape and layout."""
    def operand(rows: int, cols: int, transposed: bool) -> torch.Tensor:
        lead = (gemm.batch,) if gemm.op == "bmm" else ()
        if transposed:
            return torch.randn(*lead, cols, rows, device=device, dtype=dtype).mT
        return torch.randn(*lead, rows, cols, device=device, dtype=dtype)

    a, b = operand(gemm.m, gemm.k, gemm.a_transposed), operand(gemm.k, gemm.n, gemm.b_transposed)
    if gemm.op == "bmm":
        return lambda: torch.bmm(a, b)
    if gemm.op == "addmm":
        bias = torch.randn(gemm.n, device=device, dtype=dtype)
        return lambda: torch.addmm(bias, a, b)
    return lambda: torch.mm(a, b)


@dataclass(frozen=True)
class Ceiling:
    """A FLOP/s ceiling: its median rate and its rate in each round."""

    name: str
    median: float
    per_round: tuple[float, ...]


def gemm_ceiling(gemms: Counter[Gemm], timings: dict[Gemm, Timing], name: str) -> Ceiling:
    """The rate of all of a step's products: their FLOPs over the sum of their times (median time of each
    product, and per round)."""
    flops = sum(g.flops * count for g, count in gemms.items())
    rounds = len(next(iter(timings.values())).samples)
    per_round = tuple(flops / sum(count * timings[g].samples[r] for g, count in gemms.items()) for r in range(rounds))
    return Ceiling(name, flops / sum(count * timings[g].median for g, count in gemms.items()), per_round)


def timed_ceiling(timing: Timing, flops: float, name: str) -> Ceiling:
    """The rate of one timed product of ``flops``."""
    return Ceiling(name, flops / timing.median, tuple(flops / t for t in timing.samples))


class CeilingProbe:
    """The products timed in the same rounds as a step: each distinct matrix product of the step (one function
    apiece, weighted by how often the step runs it) and a ``square`` x ``square`` product."""

    PREFIX = "ceiling "

    def __init__(self, cfg: PretrainConfig, batch: int, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, square: int = 2048):
        self.flops, self.gemms = step_gemms(cfg, batch)
        self.square = Gemm("mm", 1, square, square, square)
        self.dtype_name = str(dtype).removeprefix("torch.")
        self._names = {f"{self.PREFIX}{g}": g for g in [*self.gemms, self.square]}
        self.fns = {name: product(g, device, dtype) for name, g in self._names.items()}

    @property
    def gemm_flops(self) -> int:
        return sum(g.flops * count for g, count in self.gemms.items())

    def ceilings(self, timings: dict[str, Timing]) -> list[Ceiling]:
        by_gemm = {g: timings[name] for name, g in self._names.items()}
        n = self.square.m
        return [timed_ceiling(by_gemm[self.square], self.square.flops, f"{n}x{n}x{n} {self.dtype_name} product"),
                gemm_ceiling(self.gemms, by_gemm, f"the step's {sum(self.gemms.values())} products "
                                                  f"({len(self.gemms)} shapes, {self.dtype_name})")]


@dataclass(frozen=True)
class Fraction:
    """Achieved FLOP/s of a step over the higher ceiling; ``warning`` is set when it comes out above 1 (the
    median: the figure is wrong; some rounds only: those rounds' ceilings were disturbed)."""

    value: Spread
    achieved: Spread  # FLOP/s
    ceiling: Ceiling
    warning: str | None

    @property
    def impossible(self) -> bool:
        """The fraction itself (the ratio of the medians) is above 1: the figure cannot be trusted."""
        return self.value.median > 1.0


def flop_fraction(flops: float, step: Timing, ceilings: list[Ceiling], label: str) -> Fraction:
    """``flops / step time`` over the higher of ``ceilings``, from the medians; the range from the rounds (each
    round's step against that round's higher ceiling). A fraction above 1 cannot be: the warning names the
    ceiling as the figure that is wrong, with the rates of the medians or of the round furthest above 1."""
    best = max(ceilings, key=lambda c: c.median)
    achieved = step.rate(flops)
    per_round = [flops / t / max(c.per_round[r] for c in ceilings) for r, t in enumerate(step.samples)]
    value = Spread.of(per_round, median=achieved.median / best.median)
    warning = None
    if value.median > 1.0:
        warning = (f"WARNING {label}: a fraction of {value.median:.2f} is above 1, which no step can reach: the "
                   f"ceiling is wrong, not the step. {best.name} ran at {best.median / 1e9:.1f} GFLOP/s, below the "
                   f"{achieved.median / 1e9:.1f} GFLOP/s the step reached (the products were slowed by other load or "
                   f"a clock change); the FLOP count is the engine's, checked against a hand count in "
                   f"tests/test_benchmarks.py.")
    elif value.high > 1.0:
        r = max(range(len(per_round)), key=per_round.__getitem__)
        top = max(ceilings, key=lambda c: c.per_round[r])
        warning = (f"WARNING {label}: a fraction of {value.high:.2f} in round {r + 1} is above 1, which no step can "
                   f"reach: that round's ceiling is wrong. {top.name} ran at {top.per_round[r] / 1e9:.1f} GFLOP/s in "
                   f"it, below the {flops / step.samples[r] / 1e9:.1f} GFLOP/s the step reached; the figure, "
                   f"{value.median:.2f} from the medians, stands, but its spread is wider than the step's own.")
    return Fraction(value, achieved, best, warning)
