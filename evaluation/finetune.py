"""``emae eval finetune``: end-to-end fine-tuning of a pre-trained encoder (MAE's recipe, on timm).

Global average pooling + ``fc_norm`` (the pre-trained final ``norm`` is not used), a new classifier
initialised with std 2e-5, AdamW with layer-wise lr decay (timm's ``layer_decay``: the classifier at the
full rate, block i at ``decay^(depth - i)``, the embeddings at ``decay^(depth + 1)``), base lr scaled by
batch / 256, warm-up + cosine, drop path, mixup 0.8 / cutmix 1.0 with label smoothing 0.1, RandAugment
(9, 0.5), random erasing 0.25, autocast where the device supports it, DDP under ``torchrun``.

Every epoch is evaluated on the validation split (held out of the training images,
:func:`evaluation.common.eval_datasets`); the model of the last epoch is evaluated once on the test split, for the
record's ``top1`` and ``top5``.

Output folder: ``config.json``, ``checkpoint.pth`` (weights, optimizer, history; a re-run continues from it
and :func:`load_finetuned` rebuilds the model from it) and ``records.jsonl``.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

import torch
from PIL import Image, ImageOps
from timm.data import Mixup, create_transform
from timm.data.auto_augment import RandAugment
from timm.layers import trunc_normal_
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.models.vision_transformer import VisionTransformer
from timm.optim import create_optimizer_v2
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from emae.checkpoint import load_checkpoint, read_weights
from emae.data import eval_transform, pretrain_transform
from emae.errors import EmaeError
from emae.export import timm as timm_export
from emae.records import print_records
from emae.settings import autocast_dtype, pick_device
from emae.steps import accumulation_steps
from evaluation.backbone import build_vit, print_load, vit_kwargs
from evaluation.common import (CHECKPOINT, EvalConfig, add_config_arguments, eval_datasets, resolve_config, selection,
                               start_run, write_run_records)
from evaluation.training import Trainer, cosine_schedule, eval_loader, evaluate, fit, image_loaders


@dataclass
class FinetuneConfig(EvalConfig):
    global_pool: str = "avg"
    epochs: int = 100
    warmup_epochs: float = 5  # may be fractional: a share of an epoch's updates
    batch_size: int = 64  # per process
    effective_batch: int = 1024  # 0: batch_size x processes; larger values accumulate gradients
    blr: float = 5e-4  # lr = blr x effective batch / 256
    lr: float = 0.0  # absolute lr; 0: from blr
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    layer_decay: float = 0.65
    drop_path: float = 0.1
    mixup: float = 0.8  # mixup alpha (0: off)
    cutmix: float = 1.0  # cutmix alpha (0: off)
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    smoothing: float = 0.1
    crop_min_scale: float = 0.08  # RandomResizedCrop's smallest scale
    auto_augment: str = "rand-m9-mstd0.5-inc1"  # timm's RandAugment spec ("": none)
    reprob: float = 0.25  # random erasing probability
    clip_grad: float = 0.0  # 0: no clipping

    protocol = "finetune"

    def validate(self) -> "FinetuneConfig":
        super().validate()
        if self.epochs < 1 or not 0 <= self.warmup_epochs <= self.epochs:
            raise EmaeError(f"need epochs >= 1 and 0 <= warmup_epochs <= epochs, got {self.epochs}, "
                            f"{self.warmup_epochs}")
        if not 0 < self.layer_decay <= 1:
            raise EmaeError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.mixing and self.batch_size % 2:
            raise EmaeError(f"mixup / cutmix need an even batch_size, got {self.batch_size}")
        return self

    @property
    def mixing(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0


def train_transform(cfg: FinetuneConfig, img_size: int):
    """MAE's fine-tuning augmentation: timm's ``create_transform`` with MAE's arguments. Without RandAugment and
    random erasing that is a random resized crop, a flip and the normalisation, :class:`emae.data.TrainTransform`,
    which a batch of Fashion-MNIST images goes through as one."""
    if not cfg.auto_augment and not cfg.reprob:
        return pretrain_transform(img_size, cfg.mean, cfg.std, cfg.crop_min_scale)
    transform = create_transform(input_size=img_size, is_training=True, scale=(cfg.crop_min_scale, 1.0),
                                 color_jitter=None, auto_augment=cfg.auto_augment or None, interpolation="bicubic",
                                 re_prob=cfg.reprob, re_mode="pixel", re_count=1, mean=cfg.mean, std=cfg.std)
    for step in transform.transforms:
        if isinstance(step, RandAugment):
            for op in step.ops:
                if op.name.startswith("Posterize"):
                    op.aug_fn = posterize
    return transform


def posterize(img: Image.Image, bits_to_keep: int, **_) -> Image.Image:
    """timm's posterize, keeping 0 bits as Pillow did before it refused ``bits=0`` (a black image).

    RandAugment's ``PosterizeIncreasing`` asks for 0 bits at magnitude 10, which ``mstd0.5`` draws now and
    then; recent Pillow raises on it instead.
    """
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return img.point(lambda _: 0)
    return ImageOps.posterize(img, bits_to_keep)


def run(cfg: FinetuneConfig):
    """Fine-tune (continuing an interrupted run; skipping a finished one); returns the records."""
    ev, done = start_run(cfg, distributed=True)
    if done:
        print_records(done, " (already done: the records exist)")
        return done
    weights = read_weights(cfg.checkpoint, cfg.arch)
    img_size = cfg.img_size or weights.info.img_size
    splits = eval_datasets(cfg, train_transform(cfg, img_size),
                           eval_transform(img_size, cfg.mean, cfg.std, cfg.crop_ratio), weights.info.in_chans)
    classes = splits.num_classes
    arguments = dict(img_size=img_size, num_classes=classes, global_pool=cfg.global_pool, drop_path_rate=cfg.drop_path)
    model, report = build_vit(weights, **arguments)
    if ev.dist.is_main:
        print_load(weights, report)
    trunc_normal_(model.head.weight, std=2e-5)
    nn.init.zeros_(model.head.bias)
    model.to(ev.device)

    train_loader, val_loader, sampler = image_loaders(splits.train, splits.val, cfg.batch_size, cfg.num_workers,
                                                      ev.dist, cfg.seed, ev.device)
    accum = accumulation_steps(cfg.effective_batch, cfg.batch_size, ev.dist.world_size)
    batch = accum * cfg.batch_size * ev.dist.world_size
    updates = len(train_loader) // accum
    if updates == 0:
        raise EmaeError(f"{cfg.data}: {len(splits.train)} training images are fewer than one batch of {batch}")
    lr = cfg.lr or cfg.blr * batch / 256
    optimizer = create_optimizer_v2(model, "adamw", lr=lr, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay,
                                    fused=True)  # one kernel a parameter group, not a loop of small ops
    mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                  switch_prob=cfg.mixup_switch_prob, label_smoothing=cfg.smoothing,
                  num_classes=classes) if cfg.mixing else None
    if mixup is not None:
        loss_fn = SoftTargetCrossEntropy()
    elif cfg.smoothing > 0:
        loss_fn = LabelSmoothingCrossEntropy(cfg.smoothing)
    else:
        loss_fn = nn.CrossEntropyLoss()
    forward: nn.Module = model
    if ev.dist.enabled:
        forward = DistributedDataParallel(model, device_ids=[ev.device.index] if ev.device.type == "cuda" else None)
    trainer = Trainer(forward, model, optimizer, cosine_schedule(optimizer, cfg.epochs, cfg.warmup_epochs, updates,
                                                                 cfg.min_lr),
                      loss_fn, ev.device, ev.amp_dtype, accum, cfg.clip_grad, mixup)
    history, wall = fit(trainer, train_loader, val_loader, ev, cfg.epochs, sampler,
                        extra_state={"vit": vit_kwargs(weights, **arguments)})
    fitted = ev.elapsed()
    test = evaluate(model, eval_loader(splits.test, cfg.batch_size, cfg.num_workers, ev.dist, ev.device), ev.device,
                    ev.amp_dtype, ev.dist)[0].tolist()
    if not ev.dist.is_main:
        return []
    last = history[-1]
    extra = {"epochs": cfg.epochs, "batch_size": batch, "lr": lr, "layer_decay": cfg.layer_decay,
             "drop_path": cfg.drop_path, "train_images": len(splits.train), "val_images": len(splits.val),
             "test_images": len(splits.test), **selection(splits, {"epoch": last["epoch"]}, last["top1"][0]),
             "peak_val_top1": max(e["top1"][0] for e in history), "checkpoint": str(ev.out / CHECKPOINT),
             "load_report": report.to_dict()}
    return write_run_records(ev, weights.config, weights.arch, {"top1": test[0], "top5": test[1]},
                             wall + ev.elapsed() - fitted, extra)


def load_finetuned(path: str | os.PathLike) -> tuple[VisionTransformer, FinetuneConfig]:
    """The fine-tuned model (strictly loaded) and the config of a fine-tuning output's ``checkpoint.pth``."""
    state = load_checkpoint(path)
    if "vit" not in state or "config" not in state:
        raise EmaeError(f"{path}: not a checkpoint of emae eval finetune (no 'vit' and 'config')")
    model = timm_export.build_vit(**state["vit"])
    model.load_state_dict(state["model"])
    return model, FinetuneConfig.from_dict(state["config"], source=str(path))


def finetuned_accuracy(path: str | os.PathLike, device: str = "auto") -> dict[str, float]:
    """Top-1 / top-5 (percent) of a saved fine-tuned model on its config's test split (the one its record
    reports)."""
    model, cfg = load_finetuned(path)
    target = pick_device(device)
    img_size = model.patch_embed.img_size[0]
    transform = eval_transform(img_size, cfg.mean, cfg.std, cfg.crop_ratio)
    test = eval_datasets(cfg, transform, transform, model.patch_embed.proj.in_channels).test
    loader = torch.utils.data.DataLoader(test, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    acc = evaluate(model.to(target), loader, target, autocast_dtype(cfg.amp, target))[0]
    return {"top1": acc[0].item(), "top5": acc[1].item()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, FinetuneConfig)


def main(args: argparse.Namespace) -> int:
    run(resolve_config(FinetuneConfig, args))
    return 0
