"""Data pipeline rate against the step rate (run by ``python -m benchmarks.run_all``).

4. The Fashion-MNIST pre-training loader of the tiny preset, as the engine builds it (:class:`PretrainImages`:
   each image's seeded RandomResizedCrop + flip, then normalise and collate; a batch augmented as one product,
   in the training process: ``num_workers=0``) in images/s, against the EMAE and the (faster) MAE step's
   images/s on the same preset. Target: the loader is >= 3x faster, so data never bounds the step. Beside
   them, in the same interleaved rounds, the same loader image by image through torchvision's PIL transforms
   (what a dataset held as files gets, and what the batch replaces): its time over the batched loader's.
"""
from __future__ import annotations

from torch.utils.data import DataLoader, RandomSampler

from benchmarks.bench_step import step_for
from benchmarks.common import BenchConfig, BenchSettings
from benchmarks.figures import Figure, Target
from benchmarks.timing import measure, ratio
from emae.data import PretrainImages, build_dataset, collate_counting_skipped


class OneByOne(PretrainImages):
    """:class:`PretrainImages` without its batch path: every image through torchvision's PIL transforms."""

    __getitems__ = None  # the DataLoader's fetcher then reads the images one by one


def next_batch(cfg, batch: int, images: type[PretrainImages] = PretrainImages):
    """A function that makes the next batch of ``cfg``'s pre-training loader, in this process."""
    dataset = images(build_dataset(cfg.dataset, cfg.data, True, None, cfg.in_chans, cfg.subset), cfg.img_size,
                     cfg.mean, cfg.std, cfg.crop_min_scale, cfg.seed)
    loader = DataLoader(dataset, batch_size=batch, sampler=RandomSampler(dataset, replacement=True,
                        num_samples=10**9), num_workers=0, drop_last=True, collate_fn=collate_counting_skipped)
    batches = iter(loader)
    return lambda: next(batches)


def loader_vs_step(bench: BenchConfig, settings: BenchSettings) -> list[Figure]:
    """[4]: the loader's images/s over each step's, and the image-by-image loader's time over the loader's, the
    loaders and both steps timed in the same rounds."""
    cfg = bench.cfg
    t = measure({"loader": next_batch(cfg, bench.batch), "one_by_one": next_batch(cfg, bench.batch, OneByOne),
                 "emae": step_for(bench, "emae"), "mae": step_for(bench, "mae")}, settings.repeats, settings.warmup)
    loader = t["loader"].rate(bench.batch)
    figures = []
    for method in ("emae", "mae"):
        share = ratio(t[method], t["loader"])  # seconds per step / seconds per batch loaded
        print(f"[4] {bench.name}, batch {bench.batch}: loader {loader.format('.1f')} img/s (in the training process), "
              f"{method.upper()} step {t[method].rate(bench.batch).format('.1f')} img/s, ratio "
              f"{share.format('.1f')}x (target >= 3x)", flush=True)
        config = dict(bench=bench.name, arch=cfg.arch, batch=bench.batch, num_workers=cfg.num_workers,
                      repeats=settings.repeats, warmup=settings.warmup)
        figures.append(Figure("[4]", f"{bench.name} batch {bench.batch}: data loader / {method.upper()} step "
                              "(images/s)", "loader_over_step", share, settings.rounds, method,
                              cfg.arch, cfg.dataset, config, Target(">=", 3.0), "x", ".1f",
                              details=dict(loader_images_per_s=loader.median,
                                           step_images_per_s=t[method].rate(bench.batch).median)))
    gain, one_by_one = ratio(t["one_by_one"], t["loader"]), t["one_by_one"].rate(bench.batch)
    print(f"[4] {bench.name}, batch {bench.batch}: image by image {one_by_one.format('.1f')} "
          f"img/s, as one batch {loader.format('.1f')} img/s: time ratio {gain.format('.1f')}x", flush=True)
    figures.append(Figure("[4]", f"{bench.name} batch {bench.batch}: loader image by image / as one batch (time)",
                          "one_by_one_over_batched", gain, settings.rounds, cfg.method, cfg.arch, cfg.dataset,
                          dict(bench=bench.name, batch=bench.batch, repeats=settings.repeats, warmup=settings.warmup),
                          None, "x", ".1f", details=dict(one_by_one_images_per_s=one_by_one.median,
                                                         batched_images_per_s=loader.median)))
    return figures
