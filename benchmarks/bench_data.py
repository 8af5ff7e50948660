"""Data pipeline rate against the step rate (run by hand: ``python -m benchmarks.bench_data``).

4. The Fashion-MNIST pre-training loader of the tiny preset (its default workers, decoding +
   RandomResizedCrop + flip + normalise) in images/s, against the EMAE and the (faster) MAE step's images/s
   on the same preset measured in the same run. Target: the loader is >= 3x faster, so data never bounds
   the step.
"""
from __future__ import annotations

import dataclasses
import time

import torch
from torch.utils.data import DataLoader, RandomSampler

from benchmarks.common import bench_configs, header, side_by_side
from emae.data import build_dataset, collate_counting_skipped, pretrain_transform
from emae.engine import build_optimizer, compute_loss
from emae.masking import make_part_masks, noise_shape
from emae.models import build_model


def loader_images_per_s(cfg, batches: int) -> float:
    dataset = build_dataset(cfg.dataset, cfg.data, True, pretrain_transform(cfg.img_size, cfg.mean, cfg.std,
                            cfg.crop_min_scale), cfg.in_chans, cfg.subset)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=RandomSampler(dataset),
                        num_workers=cfg.num_workers, drop_last=True, collate_fn=collate_counting_skipped)
    it = iter(loader)
    next(it)  # worker start-up is not part of the steady rate
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * cfg.batch_size / (time.perf_counter() - start)


def step_images_per_s(cfg, rounds: int) -> float:
    model = build_model(cfg.arch, cfg.img_size, cfg.in_chans)
    optimizer = build_optimizer(model, cfg, 1e-4)
    imgs = torch.randn(cfg.batch_size, cfg.in_chans, cfg.img_size, cfg.img_size)
    noise = torch.rand(noise_shape(cfg.method_spec.masking, cfg.batch_size, cfg.num_patches, cfg.parts))
    masks = make_part_masks(cfg.method_spec.masking, noise, cfg.parts, cfg.mask_ratio)

    def step():
        compute_loss(model, imgs, masks, cfg)[0].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return cfg.batch_size / side_by_side({"step": step}, rounds)["step"]


def main() -> None:
    header("data pipeline")
    cfg = bench_configs("emae")[1].cfg
    data_rate = loader_images_per_s(cfg, batches=20)
    for method in ("emae", "mae"):
        step_rate = step_images_per_s(dataclasses.replace(cfg, method=method), rounds=5)
        print(f"[4] fmnist tiny, {cfg.num_workers} worker(s): loader {data_rate:8.1f} img/s, {method.upper()} step "
              f"{step_rate:8.1f} img/s, ratio {data_rate / step_rate:.1f}x (target >= 3x)")


if __name__ == "__main__":
    main()
