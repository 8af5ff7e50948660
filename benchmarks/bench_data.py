"""Data pipeline rate against the step rate (run by ``python -m benchmarks.run_all``).

4. The Fashion-MNIST pre-training loader of the tiny preset (decoding + RandomResizedCrop + flip + normalise,
   then collation) in images/s, against the EMAE and the (faster) MAE step's images/s on the same preset.
   Target: the loader is >= 3x faster, so data never bounds the step. Each of the preset's loader workers
   does a batch's work on a core of its own; here that work is timed in this process (``num_workers=0``), in
   the same interleaved rounds as the two steps, so that the ratios compare like with like (a worker process
   timed on its own would run ahead during a step and take a core from it).
"""
from __future__ import annotations

from torch.utils.data import DataLoader, RandomSampler

from benchmarks.bench_step import step_for
from benchmarks.common import BenchConfig, BenchSettings
from benchmarks.figures import Figure, Target
from benchmarks.timing import measure, ratio
from emae.data import build_dataset, collate_counting_skipped, pretrain_transform


def next_batch(cfg, batch: int):
    """A function that makes the next batch of ``cfg``'s pre-training loader, in this process."""
    dataset = build_dataset(cfg.dataset, cfg.data, True, pretrain_transform(cfg.img_size, cfg.mean, cfg.std,
                            cfg.crop_min_scale), cfg.in_chans, cfg.subset)
    loader = DataLoader(dataset, batch_size=batch, sampler=RandomSampler(dataset, replacement=True,
                        num_samples=10**9), num_workers=0, drop_last=True, collate_fn=collate_counting_skipped)
    batches = iter(loader)
    return lambda: next(batches)


def loader_vs_step(bench: BenchConfig, settings: BenchSettings) -> list[Figure]:
    """[4]: the loader's images/s over each step's, the loader and both steps timed in the same rounds."""
    cfg = bench.cfg
    t = measure({"loader": next_batch(cfg, bench.batch), "emae": step_for(bench, "emae"),
                 "mae": step_for(bench, "mae")}, settings.repeats, settings.warmup)
    loader = t["loader"].rate(bench.batch)
    figures = []
    for method in ("emae", "mae"):
        share = ratio(t[method], t["loader"])  # seconds per step / seconds per batch loaded
        print(f"[4] {bench.name}, batch {bench.batch}: loader {loader.format('.1f')} img/s (one worker's work), "
              f"{method.upper()} step {t[method].rate(bench.batch).format('.1f')} img/s, ratio "
              f"{share.format('.1f')}x (target >= 3x)", flush=True)
        config = dict(bench=bench.name, arch=cfg.arch, batch=bench.batch, num_workers=cfg.num_workers,
                      repeats=settings.repeats, warmup=settings.warmup)
        figures.append(Figure("[4]", f"{bench.name} batch {bench.batch}: data loader / {method.upper()} step "
                              "(images/s, per worker)", "loader_over_step", share, settings.rounds, method,
                              cfg.arch, cfg.dataset, config, Target(">=", 3.0), "x", ".1f",
                              details=dict(loader_images_per_s=loader.median,
                                           step_images_per_s=t[method].rate(bench.batch).median)))
    return figures
