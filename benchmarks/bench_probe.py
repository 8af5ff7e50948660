"""The fast linear probe against its bare matrix products (run by ``python -m benchmarks.run_all``).

6. ``emae eval linprobe --fast`` of the fmnist preset once its features are cached: its training loop
   (:func:`evaluation.linprobe.fit_heads`: 20k training and 10k test features, one head per base learning rate,
   the preset's epochs, batch and evaluations) on random features of the backbones' width (128) and of raw
   pixels (32 x 32 = 1024), against the matrix products that training needs, timed in the same rounds: per
   update the heads' forward product (B, D) x (D, H * C) and their weights' gradient (H * C, B) x (B, D) (the
   features take no gradient), per evaluation the test features' (4096, D) x (D, H * C) chunks. The figure is
   the probe's time over the products' (1: nothing but the arithmetic); the products' GFLOP/s are printed and
   kept beside it. No target: the figure shows what the loop costs beyond its arithmetic. A call trains for
   seconds (1900 updates), so it is timed in at most :data:`ROUNDS` rounds (``--repeats``, if fewer) after one
   warm-up call. ``quick``: 2048 training and 1024 test features, two epochs.

``python -m benchmarks.bench_probe`` runs [6] alone (preset ``cpu``, records as ``benchmarks.run_all``'s).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

import torch

from benchmarks.common import BenchSettings, header, parse_settings
from benchmarks.figures import Figure
from benchmarks.timing import measure, ratio
from evaluation.linprobe import LinearHeads, LinprobeConfig, fit_heads
from evaluation.presets import preset_values
from evaluation.training import evaluates

WIDTHS = {"features": 128, "pixels": 1024}  # the fmnist backbones' width (vit_tiny_fmnist, vit_tiny_p8_fmnist)
TEST_IMAGES = 10000  # Fashion-MNIST's test split, all of which the preset evaluates on
CLASSES = 10
EVAL_CHUNK = 4096  # the test features per product of an evaluation (head_accuracy's chunk)
ROUNDS = 3


@dataclasses.dataclass(frozen=True)
class ProbeShape:
    """One probe to time: its config (the fmnist preset's), the feature width and the numbers of features."""

    cfg: LinprobeConfig
    dim: int
    train: int
    test: int

    @property
    def batch(self) -> int:
        return self.cfg.effective_batch or self.cfg.batch_size

    @property
    def updates(self) -> int:
        return self.train // self.batch * self.cfg.epochs

    @property
    def evaluations(self) -> int:
        return sum(evaluates(e, self.cfg.epochs, self.cfg.eval_every) for e in range(1, self.cfg.epochs + 1))

    @property
    def outputs(self) -> int:
        return len(self.cfg.blrs) * CLASSES  # H * C

    @property
    def flops(self) -> float:
        """The products' FLOPs: two (B, D, H * C) products per update and the test features' every evaluation."""
        return 2.0 * self.dim * self.outputs * (2 * self.batch * self.updates + self.test * self.evaluations)


def probe_shapes(quick: bool = False) -> list[ProbeShape]:
    """The fmnist preset's fast probe on the backbones' features and on raw pixels."""
    cfg = dataclasses.replace(LinprobeConfig(), **preset_values("fmnist", "linprobe"))
    train, test = cfg.train_limit, TEST_IMAGES
    if quick:
        cfg, train, test = dataclasses.replace(cfg, epochs=2, warmup_epochs=1), 2048, 1024
    return [ProbeShape(cfg, dim, train, test) for dim in WIDTHS.values()]


def probe_for(shape: ProbeShape) -> Callable[[], object]:
    """The fast probe's training on random features of ``shape``, fresh heads every call."""
    generator = torch.Generator().manual_seed(0)
    train = (torch.randn(shape.train, shape.dim, generator=generator),
             torch.randint(0, CLASSES, (shape.train,), generator=generator))
    test = (torch.randn(shape.test, shape.dim, generator=generator),
            torch.randint(0, CLASSES, (shape.test,), generator=generator))

    def probe():
        heads = LinearHeads(shape.dim, CLASSES, len(shape.cfg.blrs))
        return fit_heads(heads, train, test, shape.cfg, shape.batch, log=lambda _: None)
    return probe


def products_for(shape: ProbeShape) -> Callable[[], None]:
    """The matrix products of :func:`probe_for`'s training alone, on preallocated tensors."""
    x, grad = torch.randn(shape.batch, shape.dim), torch.randn(shape.batch, shape.outputs)
    weight, bias = torch.randn(shape.outputs, shape.dim), torch.zeros(shape.outputs)
    logits, weight_grad = torch.empty(shape.batch, shape.outputs), torch.empty(shape.outputs, shape.dim)
    chunks = torch.randn(shape.test, shape.dim).split(EVAL_CHUNK)

    def products():
        for _ in range(shape.updates):
            torch.addmm(bias, x, weight.t(), out=logits)  # the forward, as F.linear computes it
            torch.mm(grad.t(), x, out=weight_grad)  # the weights' gradient
        for _ in range(shape.evaluations):
            for chunk in chunks:
                torch.addmm(bias, chunk, weight.t())
    return products


def probe_vs_products(settings: BenchSettings) -> list[Figure]:
    """[6]: the fast probe's time over its matrix products', for the features and for raw pixels."""
    figures, rounds = [], min(settings.repeats, ROUNDS)
    for name, shape in zip(WIDTHS, probe_shapes(settings.quick)):
        t = measure({"probe": probe_for(shape), "products": products_for(shape)}, rounds, warmup=1)
        share = ratio(t["probe"], t["products"])
        rate = t["products"].rate(shape.flops / 1e9)
        cfg = shape.cfg
        print(f"[6] fmnist fast linear probe, {name} (D={shape.dim}): {len(cfg.blrs)} heads, {cfg.epochs} epochs, "
              f"{shape.updates} updates of {shape.batch}, {shape.test} test features evaluated {shape.evaluations}x: "
              f"probe {t['probe'].seconds().format('.2f', ' s')}, its products "
              f"{t['products'].seconds().format('.2f', ' s')} ({shape.flops / 1e9:.1f} GFLOP, {rate.format('.1f')} "
              f"GFLOP/s), ratio {share.format()}x", flush=True)
        config = dict(dim=shape.dim, train=shape.train, test=shape.test, heads=len(cfg.blrs), classes=CLASSES,
                      epochs=cfg.epochs, batch=shape.batch, eval_every=cfg.eval_every, repeats=rounds, warmup=1,
                      threads=torch.get_num_threads())
        figures.append(Figure("[6]", f"fmnist fast linear probe, {name} D={shape.dim}: probe / its matrix products "
                              "(time)", "probe_over_products", share, f"{rounds} interleaved rounds", "linprobe",
                              f"{name}-{shape.dim}", f"random {shape.dim}-d features", config, unit="x",
                              details=dict(probe_s=t["probe"].median, products_s=t["products"].median,
                                           products_gflop=shape.flops / 1e9, products_gflop_per_s=rate.median)))
    return figures


def main(argv: list[str] | None = None) -> None:
    from benchmarks.run_all import finish  # run_all imports this module

    settings = parse_settings(argv, "python -m benchmarks.bench_probe", __doc__, "cpu")
    started = time.perf_counter()
    header("fast linear probe: [6]")
    finish(probe_vs_products(settings), started, settings, "benchmarks.bench_probe")


if __name__ == "__main__":
    main()
