"""Frozen features: a backbone that never trains, features extracted once and cached on disk, and raw pixels.

A backbone's features are read out per block (:class:`evaluation.readouts.BlockReadouts`), cached per split, and
offered as the named read-outs of :mod:`evaluation.readouts`; raw pixels have one read-out, ``pixels``.
"""
from __future__ import annotations

import hashlib
import json
import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from emae import progress
from emae.checkpoint import LoadReport, Weights, load_checkpoint, read_weights, save_checkpoint
from emae.config import PretrainConfig
from emae.data import eval_transform
from emae.errors import EmaeError
from emae.records import PIXELS
from evaluation.backbone import build_vit, print_load
from evaluation.common import EvalRun, EvalSplits, eval_datasets
from evaluation.readouts import LAST_BLOCKS, BlockReadouts, pool_readout, readout_bases

# the config fields that decide which images each split holds (:func:`evaluation.common.eval_datasets`)
SPLIT_FIELDS = ("dataset", "data", "train_split", "val_split", "test_split", "val_size", "val_fraction", "train_limit",
                "val_limit", "test_limit")


class FrozenEncoder(nn.Module):
    """A backbone whose weights never change: always in eval mode and run without autograd.

    ``forward``: images (B, C, H, W) -> features (B, D), whatever the backbone's pooling gives.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> "FrozenEncoder":
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.model(x)


@torch.no_grad()
def extract_features(model: nn.Module, dataset: Dataset, batch_size: int, num_workers: int, device: torch.device,
                     amp_dtype: torch.dtype | None = None, desc: str = "features") -> tuple[Tensor, Tensor]:
    """The model's outputs for every image in order: ((N, ...) float32 on the CPU, (N,) int64 labels). Progress:
    batches of phase "features" (counted on the host; the copy to the CPU is the one wait for the device)."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    feats, labels = [], []
    progress.report(0, len(loader), "batches", "features")
    for i, (images, targets) in enumerate(tqdm(loader, desc=desc, leave=False)):
        with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext():
            feats.append(model(images.to(device, non_blocking=True)).float().cpu())
        labels.append(targets)
        progress.report(i + 1, len(loader), "batches", "features")
    return torch.cat(feats), torch.cat(labels).long()


def cached_features(path: str | os.PathLike, key: dict, compute: Callable[[], tuple[Tensor, Tensor]]
                    ) -> tuple[Tensor, Tensor, bool]:
    """(features, labels, whether they were read from ``path``): those saved at ``path`` under ``key``, or
    ``compute()``'s, saved there (atomically) first.

    ``key`` describes how they were made (checkpoint hash, split, image size, pooling, ...); a file at
    ``path`` made another way is an error.
    """
    path = Path(path)
    if path.exists():
        saved = load_checkpoint(path)
        if saved.get("key") != key:
            raise EmaeError(f"{path}: features made another way ({saved.get('key')}), not {key}")
        print(f"features: reusing {path} ({len(saved['labels'])} images)")
        return saved["features"], saved["labels"], True
    features, labels = compute()
    save_checkpoint({"features": features, "labels": labels, "key": key}, path)
    return features, labels, False


@dataclass
class FeatureSplits:
    """Frozen features of the three splits (:class:`evaluation.common.EvalSplits`): each (N, W) float32
    read-out bases and (N,) labels; ``readouts`` names the columns ``[start, stop)`` of W each read-out takes."""

    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    readouts: dict[str, tuple[int, int]]
    default: str  # the read-out of the config's global_pool (its last block), or "pixels"
    splits: EvalSplits
    report: LoadReport
    reused: bool  # read from the cache, made by an earlier run (whose wall time holds their extraction)
    config: dict | None  # the backbone's pre-training config, where it has one (the records' backbone fields)
    arch: str  # the backbone's architecture, or "pixels"

    def readout(self, split: tuple[Tensor, Tensor], name: str) -> Tensor:
        """The (N, D) features of read-out ``name`` of one split (``self.train``, ``self.val`` or ``self.test``)."""
        if name not in self.readouts:
            raise EmaeError(f"read-out {name!r} is not one of this backbone's: {sorted(self.readouts)}")
        start, stop = self.readouts[name]
        return split[0][:, start:stop]


def evaluation_features(run: EvalRun, cache_dir: str = "") -> FeatureSplits:
    """The features the config's checkpoint gives: a backbone's (:func:`frozen_features`), or raw pixels for
    ``--checkpoint pixels`` (:func:`pixel_features`)."""
    if run.cfg.checkpoint == PIXELS:
        return pixel_features(run)
    return frozen_features(run, read_weights(run.cfg.checkpoint, run.cfg.arch), cache_dir)


def pixel_features(run: EvalRun) -> FeatureSplits:
    """The raw-pixel baseline: each image's normalised pixels, flattened to (C * H * W,), after the evaluation
    preprocessing at ``img_size`` (default: the pre-training preset's, the size the backbones see)."""
    cfg = run.cfg
    transform = eval_transform(cfg.img_size or PretrainConfig.img_size, cfg.mean, cfg.std, cfg.crop_ratio)
    splits = eval_datasets(cfg, transform, transform, len(cfg.mean))
    flatten = nn.Flatten()
    train, val, test = [extract_features(flatten, dataset, cfg.batch_size, cfg.num_workers, run.device,
                                         desc=f"{name} pixels")
                        for name, dataset in (("train", splits.train), ("val", splits.val), ("test", splits.test))]
    return FeatureSplits(train, val, test, {PIXELS: (0, train[0].shape[1])}, PIXELS, splits,
                         LoadReport((), (), (), (), None), False, None, PIXELS)


def frozen_features(run: EvalRun, weights: Weights, cache_dir: str = "") -> FeatureSplits:
    """The config's train, validation and test features (evaluation preprocessing, no augmentation): the
    per-block read-outs of :class:`BlockReadouts` (the last :data:`LAST_BLOCKS` blocks, or all where fewer).

    They are cached as ``features-SPLIT-HASH.pth`` (HASH: of how they were made, the images of the split
    included) in ``cache_dir``, or the output folder; evaluations given the same folder (kNN and the fast linear
    probe) extract them once.
    """
    cfg = run.cfg
    model, report = build_vit(weights, img_size=cfg.img_size, global_pool=cfg.global_pool)
    print_load(weights, report)
    img_size = model.patch_embed.img_size[0]
    transform = eval_transform(img_size, cfg.mean, cfg.std, cfg.crop_ratio)
    splits = eval_datasets(cfg, transform, transform, weights.info.in_chans)
    blocks = min(LAST_BLOCKS, len(model.blocks))
    encoder = FrozenEncoder(BlockReadouts(model, blocks)).to(run.device)
    key = dict(checkpoint_sha256=run.checkpoint_sha256, img_size=img_size, global_pool=cfg.global_pool,
               crop_ratio=cfg.crop_ratio, mean=list(cfg.mean), std=list(cfg.std),
               features=f"cls and patch-token average of each of the last {blocks} blocks",
               **{field: getattr(cfg, field) for field in SPLIT_FIELDS})
    run.open_folder()
    features, reused = [], []
    for name, dataset in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
        split_key = dict(key, split=name, images=len(dataset))
        digest = hashlib.sha256(json.dumps(split_key, sort_keys=True).encode()).hexdigest()[:12]
        *split, cached = cached_features(
            Path(cache_dir or run.out) / f"features-{name}-{digest}.pth", split_key,
            lambda dataset=dataset, name=name: extract_features(encoder, dataset, cfg.batch_size, cfg.num_workers,
                                                                run.device, run.amp_dtype, desc=f"{name} features"))
        bases, readouts = readout_bases(split[0])
        features.append((bases, split[1]))
        reused.append(cached)
    return FeatureSplits(*features, readouts, pool_readout(cfg.global_pool), splits, report, all(reused),
                         weights.config, weights.arch)


def few_shot_subsets(labels: Tensor, num_classes: int, shots: int, subsets: int, seed: int) -> list[Tensor]:
    """``subsets`` random draws of ``shots`` training images per class from (N,) ``labels``: each a
    (shots * num_classes,) int64 index into them, class by class (sorted within a class), so that every draw's
    labels are the same, drawn without replacement from the seed (``seed``, ``shots``, subset), so that kNN and
    the probe of a seed draw the same images. A class with fewer images is an error."""
    labels = labels.cpu()
    counts = torch.bincount(labels, minlength=num_classes)
    if counts.min() < shots:
        raise EmaeError(f"{shots} images per class: class {int(counts.argmin())} has only {int(counts.min())} "
                        f"training images")
    draws = []
    for subset in range(subsets):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + shots * 1009 + subset)
        per_class = [torch.nonzero(labels == c).flatten() for c in range(num_classes)]
        draws.append(torch.cat([members[torch.randperm(len(members), generator=generator)[:shots]].sort().values
                                for members in per_class]))
    return draws
