"""Data pipeline rate against the step rate (run by ``python -m benchmarks.run_all``).

4. The Fashion-MNIST pre-training loader of the tiny preset (its default workers, decoding +
   RandomResizedCrop + flip + normalise) in images/s, against the EMAE and the (faster) MAE step's images/s
   on the same preset, timed in the same run by [1] and [2]. Target: the loader is >= 3x faster, so data never
   bounds the step. The loader is timed on its own, not interleaved with the steps: its worker would run ahead
   during a step and take a core from it.
"""
from __future__ import annotations

from torch.utils.data import DataLoader, RandomSampler

from benchmarks.common import BenchConfig, Settings
from benchmarks.figures import Figure, Target
from benchmarks.timing import Timing, measure, unpaired_ratio
from emae.data import build_dataset, collate_counting_skipped, pretrain_transform


def loader_timing(cfg, batch: int, settings: Settings) -> Timing:
    """Seconds per batch of the pre-training loader, in steady state (its workers started by the warm-up)."""
    dataset = build_dataset(cfg.dataset, cfg.data, True, pretrain_transform(cfg.img_size, cfg.mean, cfg.std,
                            cfg.crop_min_scale), cfg.in_chans, cfg.subset)
    loader = DataLoader(dataset, batch_size=batch, sampler=RandomSampler(dataset, replacement=True,
                        num_samples=10**9), num_workers=cfg.num_workers, drop_last=True,
                        collate_fn=collate_counting_skipped)
    batches = iter(loader)
    return measure({"loader": lambda: next(batches)}, settings.repeats, settings.warmup, min_sample_s=0.5)["loader"]


def loader_vs_step(bench: BenchConfig, steps: dict[str, Timing], settings: Settings) -> list[Figure]:
    """[4]: the loader's images/s over each step's (``steps``: method -> timing of its step at ``bench``)."""
    cfg = bench.cfg
    loader = loader_timing(cfg, bench.batch, settings).rate(bench.batch)
    figures = []
    for method, step in steps.items():
        rate = step.rate(bench.batch)
        share = unpaired_ratio(loader, rate)
        print(f"[4] {bench.name}, {cfg.num_workers} worker(s), batch {bench.batch}: loader {loader.format('.1f')} "
              f"img/s, {method.upper()} step {rate.format('.1f')} img/s, ratio {share.format('.1f')}x "
              f"(target >= 3x)", flush=True)
        config = dict(bench=bench.name, arch=cfg.arch, batch=bench.batch, num_workers=cfg.num_workers,
                      repeats=settings.repeats, warmup=settings.warmup)
        figures.append(Figure("[4]", f"{bench.name} batch {bench.batch}: data loader / {method.upper()} step "
                              f"(images/s, {cfg.num_workers} worker)", "loader_over_step", share,
                              f"{settings.repeats} rounds each, not interleaved (range of the ratio of the ranges)",
                              method, cfg.arch, cfg.dataset, config, Target(">=", 3.0), "x", ".1f",
                              details=dict(loader_images_per_s=loader.median,
                                           step_images_per_s=rate.median)))
    return figures
