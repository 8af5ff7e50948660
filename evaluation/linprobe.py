"""``emae eval linprobe``: a linear classifier on a frozen encoder (MAE's recipe).

The encoder stays in eval mode and never trains; its cls-token feature (``--global-pool avg``: the mean of
the patch tokens, through a parameter-free ``fc_norm``) feeds BatchNorm without affine parameters and a
linear layer initialised with std 0.01. LARS (timm's; trust ratio on the weight matrix, none on the bias),
base lr 0.1 with lr = base lr x batch / 256, weight decay 0, warm-up then cosine; MAE's TF-style random
resized crop (:class:`emae.data.TFRandomResizedCrop`, bicubic) + flip; top-1 / top-5 on the validation
split after every epoch (``--eval-every N``: after every N-th epoch and the last).

``--fast``: the features are extracted once, without augmentation, and cached; the probes then train on
them in memory, which takes seconds instead of hours. Several base learning rates (``--blrs``) train side by
side, as DINOv2's linear evaluation does, as one batched product (:class:`LinearHeads`), and the best one's
final accuracy is reported (chosen on the validation split, as DINOv2 does; every head's accuracy is kept in
the record). Its loop (:func:`fit_heads`) reads nothing back from the device between evaluations and saves no
checkpoint: a stopped run trains again from the start.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.optim import Lars
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from emae import progress
from emae.checkpoint import LoadReport, read_weights
from emae.data import TFRandomResizedCrop, eval_transform, pretrain_transform
from emae.errors import EmaeError
from emae.records import PIXELS, print_records
from emae.steps import NonFiniteLossError, accumulation_steps
from evaluation.backbone import build_vit, print_load
from evaluation.common import (EvalConfig, EvalRun, add_config_arguments, eval_datasets, resolve_config, start_run,
                               write_run_records)
from evaluation.features import FrozenEncoder, evaluation_features
from evaluation.training import Trainer, cosine_schedule, describe, epoch_seed, evaluates, fit, image_loaders, topk_hits


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
    eval_every: int = 1  # evaluate after every N-th epoch and after the last (0 or 1: after every epoch, as MAE)

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
        if self.eval_every < 0:
            raise EmaeError(f"eval_every must be >= 0 (0 or 1: after every epoch), got {self.eval_every}")
        return self


def probe_linear(dim: int, num_classes: int) -> nn.Linear:
    """MAE's probe layer: (B, D) -> (B, C), weights drawn with std 0.01 (truncated normal), zero bias."""
    linear = nn.Linear(dim, num_classes)
    trunc_normal_(linear.weight, std=0.01)
    nn.init.zeros_(linear.bias)
    return linear


class LinearHead(nn.Sequential):
    """MAE's probe: (B, D) features -> BatchNorm1d without affine (eps 1e-6) -> linear -> (B, C) logits."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__(nn.BatchNorm1d(dim, affine=False, eps=1e-6), probe_linear(dim, num_classes))


class HeadGrid(nn.Module):
    """H independent probes on the same features: (B, D) -> (H, B, C). The full mode's, whose checkpoints
    keep one BatchNorm and one linear layer a head; :class:`LinearHeads` computes the same in one product."""

    def __init__(self, dim: int, num_classes: int, count: int):
        super().__init__()
        self.heads = nn.ModuleList(LinearHead(dim, num_classes) for _ in range(count))

    @property
    def linears(self) -> list[nn.Linear]:
        return [head[1] for head in self.heads]

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([head(x) for head in self.heads])


class LinearHeads(nn.Module):
    """H of MAE's probes (:class:`LinearHead`) on the same features as one operation: (B, D) -> (H, B, C).

    The BatchNorm has no parameters and every head's would normalise the same batch with the same running
    statistics, so it runs once; the H linear layers, concatenated to one (H * C, D) weight, are one product
    with the normalised features. Each head keeps its own weight and bias, so LARS adapts each on its own, and
    they are drawn as H :class:`LinearHead`'s are (the same random numbers in the same order).
    """

    def __init__(self, dim: int, num_classes: int, count: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        self.linears = nn.ModuleList(probe_linear(dim, num_classes) for _ in range(count))

    def forward(self, x: Tensor) -> Tensor:
        weight = torch.cat([linear.weight for linear in self.linears])  # (H * C, D)
        bias = torch.cat([linear.bias for linear in self.linears])  # (H * C,)
        logits = F.linear(self.norm(x), weight, bias)  # (B, H * C)
        return logits.view(len(x), len(self.linears), -1).transpose(0, 1)  # (H, B, C)


def grid_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Sum over heads of each head's mean cross-entropy, in one call: (H, B, C), (B,) -> scalar. Heads share
    no weights, so each gets the gradient of its own loss. The classes go in dimension 1, a (H, C, B) view:
    torch's CPU log-softmax over a last dimension of 10 classes is about 3x slower than over dimension 1."""
    return F.cross_entropy(logits.transpose(1, 2), targets.expand(len(logits), -1), reduction="sum") / len(targets)


def lars(grid: HeadGrid | LinearHeads, lrs: list[float], momentum: float, weight_decay: float) -> Lars:
    """timm's LARS with one learning rate per head; as MAE's LARS, the trust ratio and weight decay apply to
    the weight matrices and not to the biases."""
    groups = []
    for linear, lr in zip(grid.linears, lrs):
        groups.append({"params": [linear.weight], "lr": lr, "weight_decay": weight_decay, "always_adapt": True})
        groups.append({"params": [linear.bias], "lr": lr, "weight_decay": 0.0, "always_adapt": False})
    return Lars(groups, lr=lrs[0], momentum=momentum)


def head_lrs(blrs: tuple[float, ...], batch: int) -> list[float]:
    """Each head's learning rate: base lr x batch / 256."""
    return [blr * batch / 256 for blr in blrs]


@torch.no_grad()
def head_accuracy(heads: LinearHeads, features: Tensor, labels: Tensor, chunk: int = 4096) -> Tensor:
    """Top-1 and top-5 accuracy (percent) of every head on in-memory (N, D) features and (N,) labels: (H, 2)."""
    if not len(labels):
        raise EmaeError("the validation split is empty")
    heads.eval()
    hits = sum(topk_hits(heads(features[i:i + chunk]), labels[i:i + chunk]) for i in range(0, len(labels), chunk))
    return 100.0 * hits / len(labels)


def fit_heads(heads: LinearHeads, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor], cfg: LinprobeConfig,
              batch: int, log: Callable[[str], object] = print) -> list[dict]:
    """Train ``heads`` on in-memory (N, D) features and (N,) labels, on their device, for ``cfg.epochs``: LARS
    and MAE's schedule, one update a batch of ``batch``, the data reshuffled every epoch (from
    :func:`evaluation.training.epoch_seed`; an incomplete last batch is left out), in float32.

    Returns the history of the evaluated epochs (:func:`evaluation.training.evaluates`, ``cfg.eval_every``):
    ``epoch``, ``loss`` (the mean since the previous evaluation), ``lr`` (the largest), ``top1`` and ``top5``
    (one value per head). Nothing is read back from the device between evaluations: the losses add up there,
    and a non-finite sum stops the run at the next evaluation. Progress: epochs of phase "train".
    """
    features, labels = train
    updates = len(labels) // batch
    if updates == 0:
        raise EmaeError(f"{cfg.data}: {len(labels)} training images are fewer than one batch of {batch}")
    optimizer = lars(heads, head_lrs(cfg.blrs, batch), cfg.momentum, cfg.weight_decay)
    scheduler = cosine_schedule(optimizer, cfg.epochs, cfg.warmup_epochs, updates, cfg.min_lr)
    generator = torch.Generator(device=features.device)
    history, step, since, loss_sum = [], 0, 0, torch.zeros((), device=features.device)
    progress.report(0, cfg.epochs, "epochs", "train")
    for epoch in range(1, cfg.epochs + 1):
        heads.train()
        generator.manual_seed(epoch_seed(cfg.seed, epoch - 1))
        order = torch.randperm(len(labels), generator=generator, device=features.device)
        for index in order[:updates * batch].view(updates, batch):
            scheduler.step_update(step)
            loss = grid_loss(heads(features.index_select(0, index)), labels.index_select(0, index))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach()
            step += 1
        progress.report(epoch, cfg.epochs, "epochs", "train")
        if not evaluates(epoch, cfg.epochs, cfg.eval_every):
            continue
        mean = loss_sum.item() / (step - since)
        if not math.isfinite(mean):
            raise NonFiniteLossError(f"non-finite loss {mean} of the probes in epochs {since // updates + 1}-{epoch}"
                                     f" of {cfg.epochs}; stopping")
        acc = head_accuracy(heads, *val)
        history.append({"epoch": epoch, "loss": mean, "lr": max(g["lr"] for g in optimizer.param_groups),
                        "top1": acc[:, 0].tolist(), "top5": acc[:, 1].tolist()})
        log(f"epoch {epoch}/{cfg.epochs}: " + describe(history[-1]))
        since, loss_sum = step, torch.zeros_like(loss_sum)
    return history


@dataclass
class ProbeRun:
    """A trained probe of either mode: its history (entries with ``top1`` and ``top5`` after an evaluation),
    effective batch and what the records say of its backbone and data."""

    history: list[dict]
    batch: int
    report: LoadReport
    train_images: int
    config: dict | None  # the backbone's pre-training config (the records' backbone fields)
    arch: str
    features_reused: bool  # fast mode: features read from the cache
    wall_time_s: float


def train_transform(cfg: LinprobeConfig, img_size: int):
    """MAE's linear-probe augmentation (``main_linprobe.py``): its TF-style random resized crop (bicubic),
    horizontal flip, normalise."""
    return pretrain_transform(img_size, cfg.mean, cfg.std, cfg.crop_min_scale, crop=TFRandomResizedCrop)


def _full_probe(ev: EvalRun) -> ProbeRun:
    """Frozen encoder + probes on augmented images, through the shared loop (checkpointed every epoch)."""
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
    updates = len(train_loader) // accum
    if updates == 0:
        raise EmaeError(f"{cfg.data}: {len(train)} training images are fewer than one batch of {batch}")
    optimizer = lars(grid, head_lrs(cfg.blrs, batch), cfg.momentum, cfg.weight_decay)
    trainer = Trainer(model, grid, optimizer, cosine_schedule(optimizer, cfg.epochs, cfg.warmup_epochs, updates,
                                                              cfg.min_lr),
                      grid_loss, ev.device, ev.amp_dtype, accum)
    history, wall = fit(trainer, train_loader, val_loader, ev, cfg.epochs, sampler, eval_every=cfg.eval_every)
    return ProbeRun(history, batch, report, len(train), weights.config, weights.arch, False, wall)


def _fast_probe(ev: EvalRun) -> ProbeRun:
    """Probes on cached features, or on raw pixels (one process, one batch per update). The heads are drawn
    from ``cfg.seed`` after the features are made, so that a run on cached features trains what the run that
    extracted them did (extraction draws from the random state)."""
    cfg = ev.cfg
    data = evaluation_features(ev, cfg.features_dir)
    train, val = [(x.to(ev.device), y.to(ev.device)) for x, y in (data.train, data.val)]
    torch.manual_seed(cfg.seed)
    heads = LinearHeads(train[0].shape[1], data.num_classes, len(cfg.blrs)).to(ev.device)
    batch = cfg.effective_batch or cfg.batch_size
    history = fit_heads(heads, train, val, cfg, batch)
    return ProbeRun(history, batch, data.report, len(train[1]), data.config, data.arch, data.reused, ev.elapsed())


def run(cfg: LinprobeConfig):
    """Run (or, when its records exist, skip) a linear probe; returns its records."""
    ev, done = start_run(cfg, distributed=not cfg.fast)
    if done:
        print_records(done, " (already done: the records exist)")
        return done
    probe = _fast_probe(ev) if cfg.fast else _full_probe(ev)
    if not ev.dist.is_main:
        return []
    evaluated = [e for e in probe.history if "top1" in e]
    last, lrs = evaluated[-1], head_lrs(cfg.blrs, probe.batch)
    best = max(range(len(lrs)), key=lambda h: last["top1"][h])
    extra = {"mode": "fast" if cfg.fast else "full", "epochs": cfg.epochs, "batch_size": probe.batch,
             "blr": cfg.blrs[best], "lr": lrs[best], "heads": {str(b): t for b, t in zip(cfg.blrs, last["top1"])},
             "peak_top1": max(max(e["top1"]) for e in evaluated), "train_images": probe.train_images,
             "features_reused": probe.features_reused, "load_report": probe.report.to_dict()}
    return write_run_records(ev, probe.config, probe.arch, {"top1": last["top1"][best], "top5": last["top5"][best]},
                             probe.wall_time_s, extra)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, LinprobeConfig)


def main(args: argparse.Namespace) -> int:
    run(resolve_config(LinprobeConfig, args))
    return 0
