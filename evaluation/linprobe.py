"""``emae eval linprobe``: a linear classifier on a frozen encoder (MAE's recipe).

The encoder stays in eval mode and never trains; its cls-token feature (``--global-pool avg``: the mean of
the patch tokens, through a parameter-free ``fc_norm``) feeds BatchNorm without affine parameters and a
linear layer initialised with std 0.01. LARS (timm's; trust ratio on the weight matrix, none on the bias),
base lr 0.1 with lr = base lr x batch / 256, weight decay 0, warm-up then cosine; MAE's TF-style random
resized crop (:class:`emae.data.TFRandomResizedCrop`, bicubic) + flip; top-1 / top-5 on the validation
split after every epoch.

``--fast``: the features are extracted once, without augmentation, and cached; the probes then train on
them, which takes seconds instead of hours. Several base learning rates (``--blrs``) train side by side in
one pass, as DINOv2's linear evaluation does, and the best one's final accuracy is reported (chosen on the
validation split, as DINOv2 does; every head's accuracy is kept in the record).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.optim import Lars
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from emae.checkpoint import LoadReport, read_weights
from emae.data import TFRandomResizedCrop, eval_transform, pretrain_transform
from emae.errors import EmaeError
from emae.records import PIXELS, print_records
from emae.steps import accumulation_steps
from evaluation.backbone import build_vit, print_load
from evaluation.common import (EvalConfig, EvalRun, add_config_arguments, eval_datasets, resolve_config, start_run,
                               write_run_records)
from evaluation.features import FrozenEncoder, evaluation_features
from evaluation.training import Trainer, cosine_schedule, fit, image_loaders


@dataclass
class LinprobeConfig(EvalConfig):
    fast: bool = False  # train on features extracted once, without augmentation
    blrs: tuple[float, ...] = (0.1,)  # base learning rates; several train side by side, the best is reported
    epochs: int = 90
    warmup_epochs: int = 10
    batch_size: int = 1024  # per process (in fast mode: of the feature extraction)
    effective_batch: int = 16384  # 0: batch_size x processes; larger values accumulate gradients
    min_lr: float = 0.0
    weight_decay: float = 0.0
    momentum: float = 0.9
    crop_min_scale: float = 0.08  # the training crop's smallest scale (MAE's linear probe: its crop's default)
    features_dir: str = ""  # fast mode: where features are cached ("": the output folder); shareable with knn

    protocol = "linprobe"
    takes_pixels = True

    def validate(self) -> "LinprobeConfig":
        super().validate()
        if self.checkpoint == PIXELS and not self.fast:
            raise EmaeError("--checkpoint pixels (the raw-pixel baseline) needs --fast: the probe trains on the "
                            "pixels themselves")
        if not self.blrs or min(self.blrs) <= 0:
            raise EmaeError(f"blrs must be one or more positive base learning rates, got {self.blrs}")
        if self.epochs < 1 or not 0 <= self.warmup_epochs <= self.epochs:
            raise EmaeError(f"need epochs >= 1 and 0 <= warmup_epochs <= epochs, got {self.epochs}, "
                            f"{self.warmup_epochs}")
        return self


class LinearHead(nn.Sequential):
    """MAE's probe: (B, D) features -> BatchNorm1d without affine (eps 1e-6) -> linear -> (B, C) logits."""

    def __init__(self, dim: int, num_classes: int):
        linear = nn.Linear(dim, num_classes)
        trunc_normal_(linear.weight, std=0.01)
        nn.init.zeros_(linear.bias)
        super().__init__(nn.BatchNorm1d(dim, affine=False, eps=1e-6), linear)


class HeadGrid(nn.Module):
    """H independent probes on the same features: (B, D) -> (H, B, C)."""

    def __init__(self, dim: int, num_classes: int, count: int):
        super().__init__()
        self.heads = nn.ModuleList(LinearHead(dim, num_classes) for _ in range(count))

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([head(x) for head in self.heads])


def grid_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Sum over heads of each head's cross-entropy: (H, B, C), (B,) -> scalar. Heads share no weights, so
    each gets the gradient of its own loss."""
    return sum(F.cross_entropy(head_logits, targets) for head_logits in logits)


def lars(grid: HeadGrid, lrs: list[float], momentum: float, weight_decay: float) -> Lars:
    """timm's LARS with one learning rate per head; as MAE's LARS, the trust ratio and weight decay apply to
    the weight matrices and not to the biases."""
    groups = []
    for head, lr in zip(grid.heads, lrs):
        linear = head[1]
        groups.append({"params": [linear.weight], "lr": lr, "weight_decay": weight_decay, "always_adapt": True})
        groups.append({"params": [linear.bias], "lr": lr, "weight_decay": 0.0, "always_adapt": False})
    return Lars(groups, lr=lrs[0], momentum=momentum)


class FeatureBatches:
    """Mini-batches of in-memory features, reshuffled (torch's global RNG) at every pass when ``shuffle``;
    an incomplete last batch is dropped when shuffling."""

    def __init__(self, features: Tensor, labels: Tensor, batch_size: int, shuffle: bool):
        self.features, self.labels, self.batch_size, self.shuffle = features, labels, batch_size, shuffle

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.shuffle else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.labels)
        order = torch.randperm(n).to(self.labels.device) if self.shuffle else torch.arange(n, device=self.labels.device)
        for i in range(len(self)):
            index = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield self.features[index], self.labels[index]


@dataclass
class ProbeSetup:
    """What either mode trains: ``model`` maps a loader's inputs to (H, B, C) logits; ``grid`` is its trainable
    part; ``batch`` is the effective batch (``accum`` loader batches per update, over all processes)."""

    model: nn.Module
    grid: HeadGrid
    train_loader: Iterable
    val_loader: Iterable
    sampler: DistributedSampler | None
    accum: int
    batch: int
    report: LoadReport
    train_images: int
    config: dict | None  # the backbone's pre-training config (the records' backbone fields)
    arch: str
    features_reused: bool = False  # fast mode: features read from the cache


def train_transform(cfg: LinprobeConfig, img_size: int):
    """MAE's linear-probe augmentation (``main_linprobe.py``): its TF-style random resized crop (bicubic),
    horizontal flip, normalise."""
    return pretrain_transform(img_size, cfg.mean, cfg.std, cfg.crop_min_scale, crop=TFRandomResizedCrop)


def _full_setup(ev: EvalRun) -> ProbeSetup:
    """Frozen encoder + probes on augmented images."""
    cfg = ev.cfg
    weights = read_weights(cfg.checkpoint, cfg.arch)
    vit, report = build_vit(weights, img_size=cfg.img_size, global_pool=cfg.global_pool)
    if ev.dist.is_main:
        print_load(weights, report)
    img_size = vit.patch_embed.img_size[0]
    train, val, classes = eval_datasets(cfg, train_transform(cfg, img_size),
                                        eval_transform(img_size, cfg.mean, cfg.std, cfg.crop_ratio),
                                        weights.info.in_chans)
    grid = HeadGrid(vit.num_features, classes, len(cfg.blrs))
    model: nn.Module = nn.Sequential(FrozenEncoder(vit), grid).to(ev.device)
    if ev.dist.enabled:
        model = DistributedDataParallel(model, device_ids=[ev.device.index] if ev.device.type == "cuda" else None)
    train_loader, val_loader, sampler = image_loaders(train, val, cfg.batch_size, cfg.num_workers, ev.dist, cfg.seed,
                                                      ev.device)
    accum = accumulation_steps(cfg.effective_batch, cfg.batch_size, ev.dist.world_size)
    batch = accum * cfg.batch_size * ev.dist.world_size
    return ProbeSetup(model, grid, train_loader, val_loader, sampler, accum, batch, report, len(train), weights.config,
                      weights.arch)


def _fast_setup(ev: EvalRun) -> ProbeSetup:
    """Probes on cached features, or on raw pixels (one process, one batch per update)."""
    cfg = ev.cfg
    data = evaluation_features(ev, cfg.features_dir)
    (train_x, train_y), (val_x, val_y) = [(x.to(ev.device), y.to(ev.device)) for x, y in (data.train, data.val)]
    grid = HeadGrid(train_x.shape[1], data.num_classes, len(cfg.blrs)).to(ev.device)
    batch = cfg.effective_batch or cfg.batch_size
    return ProbeSetup(grid, grid, FeatureBatches(train_x, train_y, batch, shuffle=True),
                      FeatureBatches(val_x, val_y, 4096, shuffle=False), None, 1, batch, data.report,
                      len(train_y), data.config, data.arch, data.reused)


def run(cfg: LinprobeConfig):
    """Run (or, when its records exist, skip) a linear probe; returns its records."""
    ev, done = start_run(cfg, distributed=not cfg.fast)
    if done:
        print_records(done, " (already done: the records exist)")
        return done
    probe = _fast_setup(ev) if cfg.fast else _full_setup(ev)
    updates = len(probe.train_loader) // probe.accum
    if updates == 0:
        raise EmaeError(f"{cfg.data}: fewer training images than one batch of {probe.batch}")
    lrs = [blr * probe.batch / 256 for blr in cfg.blrs]
    optimizer = lars(probe.grid, lrs, cfg.momentum, cfg.weight_decay)
    trainer = Trainer(probe.model, probe.grid, optimizer,
                      cosine_schedule(optimizer, cfg.epochs, cfg.warmup_epochs, updates, cfg.min_lr),
                      grid_loss, ev.device, ev.amp_dtype, probe.accum)
    history, wall = fit(trainer, probe.train_loader, probe.val_loader, ev, cfg.epochs, probe.sampler)
    if not ev.dist.is_main:
        return []
    last = history[-1]
    best = max(range(len(lrs)), key=lambda h: last["top1"][h])
    extra = {"mode": "fast" if cfg.fast else "full", "epochs": cfg.epochs, "batch_size": probe.batch,
             "blr": cfg.blrs[best], "lr": lrs[best], "heads": {str(b): t for b, t in zip(cfg.blrs, last["top1"])},
             "peak_top1": max(max(e["top1"]) for e in history), "train_images": probe.train_images,
             "features_reused": probe.features_reused, "load_report": probe.report.to_dict()}
    return write_run_records(ev, probe.config, probe.arch, {"top1": last["top1"][best], "top5": last["top5"][best]},
                             wall, extra)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, LinprobeConfig)


def main(args: argparse.Namespace) -> int:
    run(resolve_config(LinprobeConfig, args))
    return 0
