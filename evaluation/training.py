"""The training loop shared by the full linear probe and fine-tuning (the fast linear probe, on features in
memory, has its own: :func:`evaluation.linprobe.fit_heads`).

Per-iteration warm-up + half-cycle cosine schedule (timm's ``CosineLRScheduler``), gradient accumulation up
to an effective batch, autocast, an evaluation of top-1 / top-5 on the validation split (held out of the training
images; the test split is evaluated once, by the caller, after training) after every epoch (or every few:
:func:`evaluates`), and ``OUTPUT_DIR/checkpoint.pth`` written atomically after every epoch, from
which a re-run continues. Random state is re-seeded from (seed, epoch, rank) at the start of every epoch
(:func:`epoch_seed`), so a resumed run draws the same augmentations as an uninterrupted one.

A model's output is (B, C) logits, or (H, B, C) for H heads trained side by side (a grid of linear
probes); :func:`evaluate` reports every head.

Progress goes to :func:`emae.progress.report`: ``(update, total updates of the run, "steps", "train")`` after
every update and ``(batch, batches, "batches", "eval")`` while evaluating. Neither loop reads a value back from
the device for it (the one read per batch is the loss's non-finite check of :mod:`emae.steps`).
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.distributed as dist
from timm.scheduler import CosineLRScheduler
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm import tqdm

from emae import progress
from emae.checkpoint import save_checkpoint
from emae.distributed import DistInfo
from emae.errors import EmaeError
from emae.steps import GradientSteps
from evaluation.common import CHECKPOINT, EvalRun, load_own_checkpoint, seed_everything

TOPK = (1, 5)


def _report(done: int, total: int, unit: str, phase: str) -> None:
    """:func:`emae.progress.report` from the main process only (every ``torchrun`` process sees the same file)."""
    if total > 0 and (not dist.is_available() or not dist.is_initialized() or dist.get_rank() == 0):
        progress.report(done, total, unit, phase)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of the random state of epoch ``epoch`` (from 0) of process ``rank``."""
    return seed * 1_000_003 + epoch * 1009 + rank


def evaluates(epoch: int, epochs: int, every: int) -> bool:
    """Whether a run of ``epochs`` evaluates after epoch ``epoch`` (from 1): at the multiples of ``every`` and
    after the last epoch; ``every`` 0 or 1: after every epoch."""
    return every <= 1 or epoch % every == 0 or epoch == epochs


def cosine_schedule(optimizer: torch.optim.Optimizer, epochs: int, warmup_epochs: float, updates_per_epoch: int,
                    min_lr: float) -> CosineLRScheduler:
    """Linear warm-up from 0, then half-cycle cosine to ``min_lr``, stepped every update (MAE's). A fractional
    ``warmup_epochs`` warms up for that share of the updates (rounded), as MAE's per-iteration schedule does."""
    warmup = round(warmup_epochs * updates_per_epoch)
    return CosineLRScheduler(optimizer, t_initial=max(epochs * updates_per_epoch - warmup, 1), lr_min=min_lr,
                             warmup_t=warmup, warmup_lr_init=0.0, warmup_prefix=True, t_in_epochs=False)


@dataclass
class Trainer:
    """What one update needs. ``model`` runs forward (DDP-wrapped where distributed); ``state`` is the
    module whose weights are checkpointed; ``batch_fn`` (mixup) transforms each (images, labels) batch."""

    model: nn.Module
    state: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: CosineLRScheduler
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    device: torch.device
    amp_dtype: torch.dtype | None = None
    accum: int = 1
    clip_grad: float = 0.0
    batch_fn: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None
    total_updates: int = 0  # of the whole run, for progress reports (fit sets it; 0: to the end of the epoch)

    def __post_init__(self):
        self.steps = GradientSteps(self.model, self.optimizer, self.device.type, self.amp_dtype, self.accum,
                                   self.clip_grad)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()


def train_one_epoch(t: Trainer, loader: Iterable, step: int, desc: str) -> tuple[int, float]:
    """One pass over ``loader``; returns (updates so far, mean loss). A batch beyond the last full update is
    left out."""
    t.model.train()
    usable = len(loader) // t.accum * t.accum
    updates = t.total_updates or step + usable // t.accum
    _report(step, updates, "steps", "train")
    total, count = 0.0, 0
    for it, (images, targets) in enumerate(tqdm(loader, desc=desc, leave=False, total=usable)):
        if it >= usable:
            break
        if it % t.accum == 0:
            t.scheduler.step_update(step)
        images = images.to(t.device, non_blocking=True)
        targets = targets.to(t.device, non_blocking=True)
        if t.batch_fn is not None:
            images, targets = t.batch_fn(images, targets)
        with t.steps.accumulating(it):
            with t.autocast():
                outputs = t.model(images)
            loss = t.loss_fn(outputs.float(), targets)
            value = t.steps.backward(loss, lambda: f"at update {step + 1}; stopping (the last checkpoint is kept)")
        total, count = total + value, count + 1
        if t.steps.completes(it):
            t.steps.update()
            step += 1
            _report(step, updates, "steps", "train")
    return step, total / max(count, 1)


def topk_hits(logits: Tensor, targets: Tensor) -> Tensor:
    """How many of ``targets`` each head ranks first and among its top five: (H, B, C) or (B, C) logits and
    (B,) targets -> (H, 2) counts (float)."""
    logits = logits.unsqueeze(0) if logits.dim() == 2 else logits  # (H, B, C)
    ranked = logits.topk(min(max(TOPK), logits.shape[-1]), dim=-1).indices  # (H, B, k)
    hits = ranked == targets.view(1, -1, 1)
    return torch.stack([hits[..., :k].any(-1).sum(-1) for k in TOPK], dim=-1).float()  # (H, 2)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device, amp_dtype: torch.dtype | None = None,
             info: DistInfo = DistInfo()) -> Tensor:
    """Top-1 and top-5 accuracy (percent) of every head: (H, 2), H = 1 for a plain classifier.

    Under ``torchrun`` each process evaluates its own part of the data and the counts are summed.
    """
    model.eval()
    correct, seen = None, torch.zeros((), device=device)
    batches = len(loader) if hasattr(loader, "__len__") else 0
    _report(0, batches, "batches", "eval")
    for i, (images, targets) in enumerate(loader):
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext():
            logits = model(images).float()
        batch = topk_hits(logits, targets)
        correct = batch if correct is None else correct + batch
        seen += targets.numel()
        _report(i + 1, batches, "batches", "eval")
    if correct is None:
        raise EmaeError("the validation split is empty")
    if info.enabled and info.world_size > 1:
        dist.all_reduce(correct)
        dist.all_reduce(seen)
    return 100.0 * correct / seen


def fit(t: Trainer, train_loader: Iterable, val_loader: Iterable, run: EvalRun, epochs: int, sampler=None,
        extra_state: dict | None = None, eval_every: int = 1) -> tuple[list[dict], float]:
    """Train to ``epochs``, continuing from the output folder's checkpoint; returns (per-epoch history, the
    wall time of every run of it together).

    History entries: ``epoch``, ``loss``, ``lr`` (the largest of the param groups), ``seconds``, and after an
    evaluation (:func:`evaluates` with ``eval_every``; the last epoch always) ``top1`` and ``top5`` (one value
    per head). ``extra_state`` is saved in the checkpoint alongside the weights.
    """
    path = run.out / CHECKPOINT
    saved = load_own_checkpoint(path, run)
    run.open_folder()
    start, step, history, wall_before = 0, 0, [], 0.0
    if saved is not None:
        t.state.load_state_dict(saved["model"])
        t.optimizer.load_state_dict(saved["optimizer"])
        t.steps.scaler.load_state_dict(saved["scaler"])
        start, step, history, wall_before = saved["epoch"], saved["step"], saved["history"], saved["wall_time_s"]
        print(f"resuming from {path} after epoch {start}/{epochs}")
    t.total_updates = epochs * (len(train_loader) // t.accum)
    for epoch in range(start, epochs):
        seed_everything(epoch_seed(run.cfg.seed, epoch, run.dist.rank))
        if sampler is not None:
            sampler.set_epoch(epoch)
        started = time.perf_counter()
        step, loss = train_one_epoch(t, train_loader, step, desc=f"epoch {epoch + 1}/{epochs}")
        entry = {"epoch": epoch + 1, "loss": loss, "lr": max(g["lr"] for g in t.optimizer.param_groups)}
        if evaluates(epoch + 1, epochs, eval_every):
            acc = evaluate(t.model, val_loader, run.device, run.amp_dtype, run.dist)
            entry.update(top1=acc[:, 0].tolist(), top5=acc[:, 1].tolist())
        history.append(dict(entry, seconds=time.perf_counter() - started))
        if run.dist.is_main:
            print(f"epoch {epoch + 1}/{epochs}: " + describe(entry))
            save_checkpoint({"model": t.state.state_dict(), "optimizer": t.optimizer.state_dict(),
                             "scaler": t.steps.scaler.state_dict(), "epoch": epoch + 1, "step": step,
                             "history": history, "wall_time_s": wall_before + run.elapsed(),
                             "config": run.cfg.to_dict(), "backbone_sha256": run.checkpoint_sha256,
                             **(extra_state or {})}, path)
    return history, wall_before + run.elapsed()


def describe(entry: dict) -> str:
    """``"loss 2.6151, top-1 82.32 % (best of 5 heads)"`` for a history entry (the loss alone when it has no
    evaluation)."""
    text = f"loss {entry['loss']:.4f}"
    if "top1" in entry:
        heads = len(entry["top1"])
        text += f", top-1 {max(entry['top1']):.2f} %" + (f" (best of {heads} heads)" if heads > 1 else "")
    return text


def image_loaders(train: Dataset, val: Dataset, batch_size: int, num_workers: int, info: DistInfo, seed: int,
                  device: torch.device) -> tuple[DataLoader, DataLoader, DistributedSampler]:
    """(train loader, validation loader, train sampler): the training data shuffled and split between the
    processes (incomplete batches dropped), the validation data split without padding, so every image is
    counted once."""
    sampler = DistributedSampler(train, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed,
                                 drop_last=True)
    train_loader = DataLoader(train, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                              pin_memory=device.type == "cuda", drop_last=True, persistent_workers=num_workers > 0)
    return train_loader, eval_loader(val, batch_size, num_workers, info, device), sampler


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int, info: DistInfo, device: torch.device
                ) -> DataLoader:
    """A loader of this process's share of an evaluation split (validation or test), split between the
    processes without padding, so that every image is counted once (:func:`evaluate` sums the counts)."""
    shard = Subset(dataset, range(info.rank, len(dataset), info.world_size))
    return DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=device.type == "cuda")
