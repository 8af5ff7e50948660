"""The online monitor of a pre-training (``emae pretrain --monitor knn``): how good the encoder's features are
while it trains, cheaply enough to leave on.

At the start, every ``monitor_every`` updates (0: at the end of every epoch) and after the last update, the
current encoder encodes a fixed held-out subset of Fashion-MNIST's training images whole (no masking, eval mode,
no autograd, then back to train mode). Its features are the fmnist evaluations' read-out (``global_pool avg``:
the average of the patch tokens before the final norm, through a LayerNorm without affine parameters, as timm's
fresh ``fc_norm``), scored by weighted kNN top-1 (k = 20, T = 0.07, :func:`emae.knn.knn_scores`).

The subset (:func:`held_out_indices`): a bank of the first ``monitor_images`` training images, and as many
queries just before the last 10k training images (Fashion-MNIST's validation split). Never the test set nor the
validation split; the queries lie beyond the training images the evaluations read (the first 20k for kNN and
the linear probe, 30k for the fine-tune), though a pre-training of all 60k images sees them (without labels).

A point is a dict: ``step`` (updates), ``epoch``, ``images_seen``, ``flops`` (cumulative, the engine's count per
update), ``wall_time_s`` (training seconds: the monitor's own are left out of the run's clock), ``monitor_s``
(the monitor's seconds so far) and ``top1`` (%). Each point is a line ``{"step", "epoch", "monitor": point}`` of
the run's ``log.txt`` and a TensorBoard scalar (``monitor/knn_top1``); the checkpoint keeps the points, so a
resumed run continues its curve, and the pre-training record holds it (``extra["monitor"]["curve"]``). Under
``torchrun`` every process measures its replica (the same weights, so each takes the same time off its clock)
and rank 0 writes.
"""
from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from emae.data import FASHION_MNIST_CLASSES, build_dataset, eval_transform
from emae.errors import EmaeError
from emae.knn import knn_scores

if TYPE_CHECKING:
    from emae.config import PretrainConfig
    from emae.engine import MetricsLog
    from emae.models import MaskedAutoencoderViT

MONITORS = ("", "knn", "auto")  # "": no monitor; auto: knn on Fashion-MNIST, none on other data
K, TEMPERATURE = 20, 0.07
VALIDATION_IMAGES = 10_000  # Fashion-MNIST's validation split: the last 10k of its 60k training images
CROP_RATIO = 1.0  # the fmnist evaluations' preprocessing (evaluation/presets.py): resize to the image size


def held_out_indices(train_images: int, images: int) -> tuple[range, range]:
    """(bank, queries): indices of the monitor's two sets of ``images`` each in a training set of
    ``train_images``: the first ones, and the last ones before the validation split (the last
    :data:`VALIDATION_IMAGES`)."""
    end = train_images - VALIDATION_IMAGES
    if 2 * images > end:
        raise EmaeError(f"monitor_images={images}: the kNN monitor's bank and as many queries do not fit in the "
                        f"{max(end, 0)} training images before the validation split (the last {VALIDATION_IMAGES} of "
                        f"{train_images}): at most {max(end // 2, 0)}")
    return range(images), range(end - images, end)


def held_out_data(cfg: PretrainConfig, device: torch.device) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """((bank images, labels), (query images, labels)) on ``device``: (M, C, H, W) after the evaluations'
    preprocessing and (M,) class indices each, M = ``cfg.monitor_images``."""
    dataset = build_dataset(cfg.dataset, cfg.data, True, eval_transform(cfg.img_size, cfg.mean, cfg.std, CROP_RATIO),
                            cfg.in_chans)
    sets = []
    for indices in held_out_indices(len(dataset), cfg.monitor_images):
        images, labels = zip(*(dataset[i] for i in indices))
        sets.append((torch.stack(images).to(device), torch.tensor(labels, device=device)))
    return sets[0], sets[1]


@torch.no_grad()
def encoder_features(model: MaskedAutoencoderViT, imgs: Tensor, batch_size: int) -> Tensor:
    """The evaluations' ``global_pool avg`` read-out of whole images: (M, C, H, W) -> (M, D), the mean of the patch
    tokens before the encoder's final norm, layer-normalised without affine parameters. The model runs in eval
    mode and is returned to the mode it was in."""
    pooled = []  # (b, D) per batch: the mean of the patch tokens (not the cls token) that enter the final norm
    hook = model.norm.register_forward_hook(lambda module, args, output: pooled.append(args[0][:, 1:].mean(dim=1)))
    training = model.training
    model.eval()
    try:
        for batch in imgs.split(batch_size):
            model.forward_features(batch)
    finally:
        hook.remove()
        model.train(training)
    features = torch.cat(pooled).float()
    return F.layer_norm(features, features.shape[-1:], eps=model.norm.eps)


def knn_top1(model: MaskedAutoencoderViT, bank: tuple[Tensor, Tensor], queries: tuple[Tensor, Tensor],
             batch_size: int) -> float:
    """kNN top-1 (%) of the queries (images (M, C, H, W), labels (M,)) against the bank's, on the model's features."""
    scores = knn_scores(encoder_features(model, bank[0], batch_size), bank[1],
                        encoder_features(model, queries[0], batch_size), len(FASHION_MNIST_CLASSES), K, TEMPERATURE)
    return (scores.argmax(1) == queries[1]).float().mean().item() * 100


class KnnMonitor:
    """The kNN monitor of one pre-training: its held-out data, its points and its seconds."""

    def __init__(self, cfg: PretrainConfig, device: torch.device, effective_batch: int):
        if cfg.dataset != "fashion-mnist":
            raise EmaeError(f"--monitor knn scores Fashion-MNIST's labelled training images; dataset "
                            f"{cfg.dataset!r} is not supported (its images have no labels the monitor reads): "
                            f"pre-train it with --monitor ''")
        self.every, self.images, self.batch_size = cfg.monitor_every, cfg.monitor_images, cfg.batch_size
        self.effective_batch = effective_batch
        self.held_out = held_out_data(cfg, device)
        self.points: list[dict] = []
        self.seconds = 0.0  # the monitor's, over the whole run (a resumed run's earlier ones included)
        self.flops_per_update = 0
        self.log: MetricsLog | None = None

    def begin(self, model: MaskedAutoencoderViT, log: MetricsLog, flops_per_update: int, ckpt: dict | None) -> None:
        """Start monitoring, writing points to ``log`` and counting ``flops_per_update`` per update: take the first
        point (the initialised model's, at step 0), or continue the curve of the checkpoint ``ckpt`` being resumed."""
        self.log, self.flops_per_update = log, flops_per_update
        if ckpt is None:
            self._point(model, 0, 0, 0.0)
        elif "monitor" not in ckpt:
            raise EmaeError("the checkpoint being resumed has no monitor state, though its config has --monitor knn")
        else:
            self.points, self.seconds = [dict(p) for p in ckpt["monitor"]["points"]], ckpt["monitor"]["seconds"]

    def after_update(self, model: MaskedAutoencoderViT, step: int, epoch: int, updates_per_epoch: int,
                     total_updates: int, wall_s: float) -> float:
        """Called after each update (``step`` of ``total_updates``, in ``epoch``, 1-based) with the training seconds
        so far; takes a point when one is due and returns the seconds it took (0 when none was due)."""
        if step < total_updates and step % (self.every or updates_per_epoch):
            return 0.0
        return self._point(model, step, epoch, wall_s)

    def _point(self, model: MaskedAutoencoderViT, step: int, epoch: int, wall_s: float) -> float:
        started = time.perf_counter()
        point = {"step": step, "epoch": epoch, "images_seen": step * self.effective_batch,
                 "flops": step * self.flops_per_update, "wall_time_s": wall_s,
                 "top1": knn_top1(model, *self.held_out, self.batch_size)}
        spent = time.perf_counter() - started
        self.seconds += spent
        point["monitor_s"] = self.seconds
        self.points.append(point)
        self._write(point)
        return spent

    def _write(self, point: dict) -> None:
        """The point's line in ``log.txt`` and its TensorBoard scalar (rank 0's log; the others' write nothing)."""
        if self.log.enabled:
            with open(self.log.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": point["step"], "epoch": point["epoch"], "monitor": point}) + "\n")
        if self.log.writer is not None:
            self.log.writer.add_scalar("monitor/knn_top1", point["top1"], point["step"])

    def state_dict(self) -> dict:
        """What a checkpoint keeps for a resumed run's curve."""
        return {"points": [dict(p) for p in self.points], "seconds": self.seconds}

    def summary(self, wall_s: float) -> dict:
        """The monitor of a run of ``wall_s`` training seconds, for its record: settings, cost and curve."""
        return {"kind": "knn", "k": K, "temperature": TEMPERATURE, "every": self.every,
                "images": self.images, "seconds": self.seconds, "share": self.seconds / wall_s,
                "curve": [dict(p) for p in self.points]}

    def cost_line(self, wall_s: float) -> str:
        last = self.points[-1]
        return (f"kNN monitor: {len(self.points)} points, last top-1 {last['top1']:.2f} % at step {last['step']}; "
                f"{self.seconds:.1f} s, {100 * self.seconds / wall_s:.1f} % of the {wall_s:.1f} s of pre-training")


def build_monitor(cfg: PretrainConfig, device: torch.device, effective_batch: int) -> KnnMonitor | None:
    """The run's monitor (``cfg.monitor``) of updates of ``effective_batch`` images: None for "" (and for "auto"
    on data other than Fashion-MNIST's), else a :class:`KnnMonitor` with its data read."""
    return KnnMonitor(cfg, device, effective_batch) if monitor_kind(cfg) == "knn" else None


def monitor_kind(cfg: PretrainConfig) -> str:
    """``cfg.monitor`` with ``auto`` resolved: ``knn`` on Fashion-MNIST (the only labelled data the monitor
    reads), ``""`` otherwise."""
    if cfg.monitor == "auto":
        return "knn" if cfg.dataset == "fashion-mnist" else ""
    return cfg.monitor
