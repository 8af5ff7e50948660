"""Pre-training step benchmarks (run by ``python -m benchmarks.run_all`` and ``benchmarks/bench_gpu.py``).

1. Our MAE step against MAE's published formulation (benchmarks/reference_mae.py) at the same config:
   time of forward + backward + optimiser step, target ours >= 1.1x faster.
2. EMAE, K = 4 parts in one batched pass, against four serial MAE steps over the same images (each on
   one part): target batched <= 0.9x the serial time.
3. Achieved FLOP/s of our step (the engine's FLOP count) as a fraction of the matrix-product ceiling: the
   higher of the rate of the step's own products and of a large square product, both timed in the same
   rounds as the step. Target >= 0.8 for ViT-S/16 at 224 on the CPU. Measured with [1] (MAE: our step
   there) and [2] (EMAE: the batched step there), so the step is timed once.
Also (``compiled``): our step with the forward pass under ``torch.compile`` (``emae pretrain --compile``)
against eager, both methods; the first compiled call (compilation) is timed apart.
"""
from __future__ import annotations

import copy
import dataclasses
import time

import torch

from benchmarks.ceiling import Ceiling, CeilingProbe, flop_fraction
from benchmarks.common import BenchConfig, BenchSettings
from benchmarks.figures import Figure, Target
from benchmarks.reference_mae import reference_loss, reference_optimizer
from benchmarks.timing import Timing, measure, ratio
from emae.engine import build_optimizer, compute_loss
from emae.masking import PartMasks, make_part_masks, noise_shape
from emae.models import build_model


def make_step(model, optimizer, loss_fn):
    def step():
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def our_step(model, forward, bench: BenchConfig, imgs, masks):
    """Our optimiser step of ``model`` with the forward pass run by ``forward`` (the model or a wrapper)."""
    return make_step(model, build_optimizer(model, bench.cfg, 1e-4),
                     lambda: compute_loss(forward, imgs, masks, bench.cfg, bench.amp)[0])


def inputs(bench: BenchConfig):
    cfg = bench.cfg
    torch.manual_seed(0)
    imgs = torch.randn(bench.batch, cfg.in_chans, cfg.img_size, cfg.img_size, device=bench.device)
    noise = torch.rand(noise_shape(cfg.method_spec.masking, bench.batch, cfg.num_patches, cfg.parts),
                       device=bench.device)
    return imgs, noise


def model_for(bench: BenchConfig):
    cfg = bench.cfg
    return build_model(cfg.arch, cfg.img_size, cfg.in_chans).to(bench.device)


def with_method(bench: BenchConfig, method: str) -> BenchConfig:
    return dataclasses.replace(bench, cfg=dataclasses.replace(bench.cfg, method=method))


def method_inputs(bench: BenchConfig, method: str):
    """(``bench`` for ``method``, a fresh model, a random batch, the method's masks of it)."""
    b = with_method(bench, method)
    imgs, noise = inputs(b)
    masks = make_part_masks(b.cfg.method_spec.masking, noise, b.cfg.parts, b.cfg.mask_ratio)
    return b, model_for(b), imgs, masks


def step_for(bench: BenchConfig, method: str):
    """Our optimiser step of ``method`` (its masks, loss and optimiser) on a random batch of ``bench``."""
    b, model, imgs, masks = method_inputs(bench, method)
    return our_step(model, model, b, imgs, masks)


def figure(bench: BenchConfig, settings: BenchSettings, key: str, name: str, metric: str, value, **kwargs) -> Figure:
    cfg = bench.cfg
    config = dict(bench=bench.name, arch=cfg.arch, img_size=cfg.img_size, in_chans=cfg.in_chans, batch=bench.batch,
                  parts=cfg.parts, mask_ratio=cfg.mask_ratio, device=bench.device,
                  dtype=str(bench.dtype).removeprefix("torch."), repeats=settings.repeats, warmup=settings.warmup,
                  threads=torch.get_num_threads())
    return Figure(key, f"{bench.name} batch {bench.batch}: {name}", metric, value, settings.rounds, cfg.method,
                  cfg.arch, f"random {cfg.img_size}px images", config, **kwargs)


def measure_with_ceiling(bench: BenchConfig, settings: BenchSettings,
                         fns: dict) -> tuple[CeilingProbe, dict[str, Timing]]:
    """Time ``fns`` and the matmul ceiling's products of ``bench``'s step in the same rounds: (the probe, the
    timings of both by name)."""
    probe = CeilingProbe(bench.cfg, bench.batch, bench.device, bench.dtype, settings.square)
    return probe, measure({**fns, **probe.fns}, settings.repeats, settings.warmup)


def fraction_figure(bench: BenchConfig, settings: BenchSettings, probe: CeilingProbe, step: Timing,
                    timings: dict[str, Timing]) -> Figure:
    """[3]: the step's achieved FLOP/s over the higher ceiling measured in the same rounds."""
    ceilings = probe.ceilings(timings)
    if settings.peak_flops:
        ceilings.append(Ceiling(settings.peak_name, settings.peak_flops, (settings.peak_flops,) * settings.repeats))
    method = bench.cfg.method.upper()
    frac = flop_fraction(probe.flops, step, ceilings, f"[3] {bench.name} {method}")
    covered = probe.gemm_flops / probe.flops
    print(f"[3] {bench.name} {method} batch {bench.batch}: {step.rate(bench.batch).format('.1f')} img/s, "
          f"{probe.flops / 1e9:.1f} GFLOP/step, {(frac.achieved.median / 1e9):.1f} GFLOP/s; ceilings: "
          + ", ".join(f"{c.name} {c.median / 1e9:.1f} ({min(c.per_round) / 1e9:.1f}-{max(c.per_round) / 1e9:.1f}) "
                      "GFLOP/s" for c in ceilings)
          + f" (the products are {covered:.1%} of the step's FLOPs); fraction {frac.value.format()} of the higher",
          flush=True)
    if frac.warning:
        print(frac.warning, flush=True)
    details = dict(flops_per_step=probe.flops, achieved_flop_per_s=frac.achieved.median,
                   ceiling=frac.ceiling.name, ceilings={c.name: c.median for c in ceilings},
                   product_share_of_flops=covered, images_per_s=step.rate(bench.batch).median)
    target = Target(">=", bench.flop_target) if bench.flop_target else None
    return figure(bench, settings, "[3]", f"{method} step FLOP/s / matmul ceiling", "flop_fraction", frac.value,
                  target=target, invalid=frac.warning if frac.impossible else "", details=details)


def ours_vs_reference(bench: BenchConfig, settings: BenchSettings) -> list[Figure]:
    """[1] and [3] for MAE: our step, the reference step and the ceiling's products in the same rounds."""
    bench = with_method(bench, "mae")
    cfg = bench.cfg
    imgs, noise = inputs(bench)
    model = model_for(bench)
    ref_model = copy.deepcopy(model)
    masks = make_part_masks("random", noise, 1, cfg.mask_ratio)

    def ref_loss():
        with torch.autocast(bench.device, dtype=bench.amp, enabled=bench.amp is not None):
            return reference_loss(ref_model, imgs, noise, cfg.mask_ratio)

    ours = our_step(model, model, bench, imgs, masks)
    ref = make_step(ref_model, reference_optimizer(ref_model, 1e-4), ref_loss)
    probe, t = measure_with_ceiling(bench, settings, {"ours": ours, "reference": ref})
    speedup = ratio(t["reference"], t["ours"])
    print(f"[1] {bench.name} batch {bench.batch}: ours {t['ours'].rate(bench.batch).format('.1f')} img/s, "
          f"reference {t['reference'].rate(bench.batch).format('.1f')} img/s, speed-up {speedup.format()}x "
          f"(target >= 1.1x)", flush=True)
    speed = figure(bench, settings, "[1]", "our MAE step / MAE's formulation (speed-up)", "speedup_vs_reference",
                   speedup, target=Target(">=", 1.1), unit="x",
                   details=dict(ours_images_per_s=t["ours"].rate(bench.batch).median,
                                reference_images_per_s=t["reference"].rate(bench.batch).median))
    return [speed, fraction_figure(bench, settings, probe, t["ours"], t)]


def batched_vs_serial(bench: BenchConfig, settings: BenchSettings) -> list[Figure]:
    """[2] and [3] for EMAE: the batched EMAE step, K serial MAE steps and the ceiling's products in the same
    rounds."""
    bench = with_method(bench, "emae")
    cfg = bench.cfg
    imgs, _ = inputs(bench)
    masks = make_part_masks("parallel", torch.rand(bench.batch, cfg.num_patches, device=bench.device), cfg.parts,
                            cfg.mask_ratio)
    model = model_for(bench)
    optimizer = build_optimizer(model, cfg, 1e-4)
    mae_cfg = dataclasses.replace(cfg, method="mae")
    (ids,) = masks.ids_keep
    singles = [PartMasks((ids[:, k:k + 1],), masks.mask[:, k:k + 1]) for k in range(cfg.parts)]
    batched = make_step(model, optimizer, lambda: compute_loss(model, imgs, masks, cfg, bench.amp)[0])
    serial_steps = [make_step(model, optimizer, lambda m=m: compute_loss(model, imgs, m, mae_cfg, bench.amp)[0])
                    for m in singles]

    def serial():
        for step in serial_steps:
            step()

    probe, t = measure_with_ceiling(bench, settings, {"batched": batched, "serial": serial})
    share = ratio(t["batched"], t["serial"])
    print(f"[2] {bench.name} batch {bench.batch}, K={cfg.parts}: batched {t['batched'].seconds().format('.3f', ' s')}, "
          f"{cfg.parts} serial MAE steps {t['serial'].seconds().format('.3f', ' s')}, time ratio "
          f"{share.format()} (target <= 0.9)", flush=True)
    batched_fig = figure(bench, settings, "[2]", f"EMAE K={cfg.parts} in one pass / {cfg.parts} serial MAE steps "
                         "(time)", "batched_over_serial", share, target=Target("<=", 0.9),
                         details=dict(batched_s=t["batched"].median, serial_s=t["serial"].median))
    return [batched_fig, fraction_figure(bench, settings, probe, t["batched"], t)]


def compiled_vs_eager(bench: BenchConfig, settings: BenchSettings) -> list[Figure]:
    """Our step, forward pass compiled, against eager, for MAE then EMAE; no target."""
    figures = []
    for method in ("mae", "emae"):
        b, model, imgs, masks = method_inputs(bench, method)
        twin = copy.deepcopy(model)
        eager = our_step(model, model, b, imgs, masks)
        fast = our_step(twin, torch.compile(twin), b, imgs, masks)
        started = time.perf_counter()
        fast()
        compile_s = time.perf_counter() - started
        t = measure({"eager": eager, "compiled": fast}, settings.repeats, settings.warmup)
        speedup = ratio(t["eager"], t["compiled"])
        print(f"[compile] {b.name} {method.upper()} batch {b.batch}: compiled "
              f"{t['compiled'].rate(b.batch).format('.1f')} img/s, eager {t['eager'].rate(b.batch).format('.1f')} "
              f"img/s, speed-up {speedup.format()}x (first call, compiling: {compile_s:.0f} s)", flush=True)
        figures.append(figure(b, settings, "[c]", f"{method.upper()} step compiled / eager (speed-up)",
                              "compile_speedup", speedup, unit="x", details=dict(compile_s=compile_s)))
    return figures
