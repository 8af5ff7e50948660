"""Pre-training step benchmarks (run by hand: ``python -m benchmarks.bench_step``).

1. Our MAE step against MAE's published formulation (benchmarks/reference_mae.py) at the same config:
   images/s of forward + backward + optimiser step, target ours >= 1.1x and never below 1.0x.
2. EMAE, K = 4 parts in one batched pass, against four serial MAE steps over the same images (each on
   one part): target batched <= 0.9x the serial time.
3. Achieved FLOP/s of our step (torch's FLOP counter) as a fraction of this machine's fp32 matmul rate,
   measured in the same run: target >= 0.8 for ViT-S/16 at 224.
Also (``[compile]``): our step with the forward pass under ``torch.compile`` (``emae pretrain --compile``)
against eager, both methods; the first compiled call (compilation) is timed apart.
"""
from __future__ import annotations

import copy
import dataclasses
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import BenchConfig, bench_configs, header, matmul_flops_per_s, side_by_side
from benchmarks.reference_mae import reference_loss, reference_optimizer
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


def ours_vs_reference(bench: BenchConfig, rounds: int) -> None:
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
    t = side_by_side({"ours": ours, "reference": ref}, rounds)
    print(f"[1] {bench.name:16s} batch {bench.batch:3d}: ours {bench.batch / t['ours']:8.1f} img/s, "
          f"reference {bench.batch / t['reference']:8.1f} img/s, speed-up {t['reference'] / t['ours']:.2f}x "
          f"(target >= 1.1x)")


def batched_vs_serial(bench: BenchConfig, rounds: int) -> None:
    cfg = copy.deepcopy(bench.cfg)
    cfg.method = "emae"
    imgs, _ = inputs(bench)
    masks = make_part_masks("parallel", torch.rand(bench.batch, cfg.num_patches, device=bench.device), cfg.parts,
                            cfg.mask_ratio)
    model = model_for(bench)
    optimizer = build_optimizer(model, cfg, 1e-4)
    mae_cfg = copy.deepcopy(cfg)
    mae_cfg.method = "mae"
    (ids,) = masks.ids_keep
    singles = [PartMasks((ids[:, k:k + 1],), masks.mask[:, k:k + 1]) for k in range(cfg.parts)]
    batched = make_step(model, optimizer, lambda: compute_loss(model, imgs, masks, cfg, bench.amp)[0])
    serial_steps = [make_step(model, optimizer, lambda m=m: compute_loss(model, imgs, m, mae_cfg, bench.amp)[0])
                    for m in singles]

    def serial():
        for step in serial_steps:
            step()

    t = side_by_side({"batched": batched, "serial": serial}, rounds)
    print(f"[2] {bench.name:16s} batch {bench.batch:3d}, K={cfg.parts}: batched {t['batched']:.3f} s, "
          f"{cfg.parts} serial MAE steps {t['serial']:.3f} s, ratio {t['batched'] / t['serial']:.2f} (target <= 0.9)")


def method_cases(bench: BenchConfig):
    """MAE, then EMAE, at the bench's config: (bench, images, masks, a fresh model) for each."""
    for method in ("mae", "emae"):
        b = dataclasses.replace(bench, cfg=dataclasses.replace(bench.cfg, method=method))
        imgs, noise = inputs(b)
        masks = make_part_masks(b.cfg.method_spec.masking, noise, b.cfg.parts, b.cfg.mask_ratio)
        yield b, imgs, masks, model_for(b)


def achieved_flops(bench: BenchConfig, peak: float, rounds: int, peak_name: str = "the fp32 matmul rate") -> None:
    for b, imgs, masks, model in method_cases(bench):
        step = our_step(model, model, b, imgs, masks)
        with FlopCounterMode(display=False) as counter:
            step()
        flops = counter.get_total_flops()
        seconds = side_by_side({"step": step}, rounds)["step"]
        print(f"[3] {b.name:16s} {b.cfg.method:4s} batch {b.batch:3d}: {b.batch / seconds:8.1f} img/s, "
              f"{flops / 1e9:8.1f} GFLOP/step, {flops / seconds / 1e9:9.1f} GFLOP/s = {flops / seconds / peak:.2f} "
              f"of {peak_name} {peak / 1e9:.1f} GFLOP/s" + (" (target >= 0.8)" if b.name.startswith("ViT-S") else ""))


def compiled_vs_eager(bench: BenchConfig, rounds: int) -> None:
    for b, imgs, masks, model in method_cases(bench):
        twin = copy.deepcopy(model)
        eager = our_step(model, model, b, imgs, masks)
        fast = our_step(twin, torch.compile(twin), b, imgs, masks)
        started = time.perf_counter()
        fast()
        compile_s = time.perf_counter() - started
        t = side_by_side({"eager": eager, "compiled": fast}, rounds)
        print(f"[compile] {b.name:16s} {b.cfg.method:4s} batch {b.batch:3d}: compiled {b.batch / t['compiled']:8.1f} "
              f"img/s, eager {b.batch / t['eager']:8.1f} img/s, speed-up {t['eager'] / t['compiled']:.2f}x "
              f"(first call, compiling: {compile_s:.0f} s)")


def main(rounds: int = 3) -> None:
    header("pre-training step")
    peak = matmul_flops_per_s()
    for bench in bench_configs():
        ours_vs_reference(bench, rounds)
    for bench in bench_configs("emae"):
        batched_vs_serial(bench, rounds)
    for bench in bench_configs():
        achieved_flops(bench, peak, rounds)
    for bench in bench_configs():
        compiled_vs_eager(bench, rounds)


if __name__ == "__main__":
    main()
