"""Frozen features: a backbone that never trains, features extracted once and cached on disk, and raw pixels."""
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
from evaluation.common import EvalRun, eval_datasets


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
    """Features of every image in order: ((N, D) float32 on the CPU, (N,) int64 labels). Progress: batches of
    phase "features" (counted on the host; the features' copy to the CPU is the one wait for the device)."""
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
    """Frozen features of both splits: (N, D) float32 features and (N,) labels each."""

    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    num_classes: int
    report: LoadReport
    reused: bool  # read from the cache, made by an earlier run (whose wall time holds their extraction)
    config: dict | None  # the backbone's pre-training config, where it has one (the records' backbone fields)
    arch: str  # the backbone's architecture, or "pixels"


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
    train, val, classes = eval_datasets(cfg, transform, transform, len(cfg.mean))
    flatten = nn.Flatten()
    splits = [extract_features(flatten, dataset, cfg.batch_size, cfg.num_workers, run.device, desc=f"{name} pixels")
              for name, dataset in (("train", train), ("val", val))]
    return FeatureSplits(splits[0], splits[1], classes, LoadReport((), (), (), (), None), False, None, PIXELS)


def frozen_features(run: EvalRun, weights: Weights, cache_dir: str = "") -> FeatureSplits:
    """The config's train and validation features (evaluation preprocessing, no augmentation).

    They are cached as ``features-SPLIT-HASH.pth`` (HASH: of how they were made) in ``cache_dir``, or the
    output folder; evaluations given the same folder (kNN and the fast linear probe) extract them once.
    """
    cfg = run.cfg
    model, report = build_vit(weights, img_size=cfg.img_size, global_pool=cfg.global_pool)
    print_load(weights, report)
    img_size = model.patch_embed.img_size[0]
    transform = eval_transform(img_size, cfg.mean, cfg.std, cfg.crop_ratio)
    train, val, classes = eval_datasets(cfg, transform, transform, weights.info.in_chans)
    encoder = FrozenEncoder(model).to(run.device)
    key = dict(checkpoint_sha256=run.checkpoint_sha256, img_size=img_size, global_pool=cfg.global_pool,
               crop_ratio=cfg.crop_ratio, mean=list(cfg.mean), std=list(cfg.std), dataset=cfg.dataset, data=cfg.data)
    run.open_folder()
    splits, reused = [], []
    for name, dataset, limit in (("train", train, cfg.train_limit), ("val", val, cfg.val_limit)):
        split_key = dict(key, split=name, limit=limit)
        digest = hashlib.sha256(json.dumps(split_key, sort_keys=True).encode()).hexdigest()[:12]
        *split, cached = cached_features(
            Path(cache_dir or run.out) / f"features-{name}-{digest}.pth", split_key,
            lambda dataset=dataset, name=name: extract_features(encoder, dataset, cfg.batch_size, cfg.num_workers,
                                                                run.device, run.amp_dtype, desc=f"{name} features"))
        splits.append(tuple(split))
        reused.append(cached)
    return FeatureSplits(splits[0], splits[1], classes, report, all(reused), weights.config, weights.arch)
