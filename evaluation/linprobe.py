"""``emae eval linprobe``: a linear classifier on a frozen encoder (MAE's recipe).

The encoder stays in eval mode and never trains; its cls-token feature (``--global-pool avg``: the mean of
the patch tokens, through a parameter-free ``fc_norm``) feeds BatchNorm without affine parameters and a
linear layer initialised with std 0.01. LARS (timm's; trust ratio on the weight matrix, none on the bias),
base lr 0.1 with lr = base lr x batch / 256, weight decay 0, warm-up then cosine; MAE's TF-style random
resized crop (:class:`emae.data.TFRandomResizedCrop`, bicubic) + flip; top-1 / top-5 on the validation
split after every epoch (``--eval-every N``: after every N-th epoch and the last).

Every choice is made on the validation split, held out of the training images
(:func:`evaluation.common.eval_datasets`): the heads are evaluated there during training, and the test split is
evaluated once, with the chosen head, for the record's ``top1`` and ``top5``. The full mode chooses the base
learning rate (``--blrs``) at the last epoch.

``--fast``: the features are extracted once, without augmentation, and cached; the probes then train on
them in memory, which takes seconds instead of hours. A grid of heads trains side by side on one pass of the
features, as DINOv2's linear evaluation does: read-outs (``readouts``, :data:`evaluation.features.READOUTS`:
the cls token, the patch-token average or both, of the last block or averaged over the last four) x base
learning rates, as one batched product (:class:`LinearHeads`), and the head and evaluated epoch with the best
validation top-1 are chosen; every cell's validation accuracy is kept in the record's ``grid``. ``shots``:
few-shot probes as well, the same grid on ``shots`` random training images per class (``shot_subsets`` draws,
the same images as few-shot kNN's, side by side as one grid: :func:`probe_draws`), trained on the whole draw at
once for ``epochs`` updates at the learning rates of the full-data probe, chosen on the validation split at the
last epoch, recorded as ``top1_Nshot``, the mean over the draws. Its loop (:func:`fit_heads`) reads nothing back
from the device between evaluations and saves no checkpoint: a stopped run trains again from the start.
"""
from __future__ import annotations

import argparse
import dataclasses
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
from evaluation.common import (EvalConfig, EvalRun, EvalSplits, add_config_arguments, eval_datasets,
                               few_shot_summary, resolve_config, selection, start_run, write_run_records)
from evaluation.features import FrozenEncoder, evaluation_features, few_shot_subsets, pool_readout
from evaluation.training import (Trainer, cosine_schedule, describe, epoch_seed, eval_loader, evaluate, evaluates, fit,
                                 image_loaders, topk_hits)


@dataclass
class LinprobeConfig(EvalConfig):
    fast: bool = False  # train on features extracted once, without augmentation
    blrs: tuple[float, ...] = (0.1,)  # base learning rates; several train side by side, chosen on validation
    readouts: tuple[str, ...] = ()  # fast mode: the read-outs of the grid (none: global_pool's, of the last block)
    shots: tuple[int, ...] = ()  # fast mode: few-shot probes on this many training images per class (none: none)
    shot_subsets: int = 3  # random draws of each few-shot training set
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
        if not self.fast and (self.readouts or self.shots):
            raise EmaeError(f"readouts and shots are grids of the fast probe (--fast); the full probe reads "
                            f"global_pool and all training images, got readouts={self.readouts}, shots={self.shots}")
        if (self.shots and min(self.shots) < 1) or self.shot_subsets < 1:
            raise EmaeError(f"shots must be >= 1 and shot_subsets >= 1, got shots={self.shots}, "
                            f"shot_subsets={self.shot_subsets}")
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
    """MAE's probes (:class:`LinearHead`) on column ranges of the same features as one operation: (B, D) -> (H, B, C).

    ``spans``: the columns ``[start, stop)`` of D each group of ``count`` heads reads (a read-out; default: all of
    D), H = len(spans) x count, head ``s * count + i`` the i-th of span s. The BatchNorm has no parameters and
    works per column, so it runs once over D and each head's is its span's columns of it; each group's
    ``count`` linear layers, concatenated to one (count * C, stop - start) weight, are one product with its
    normalised columns. Each head keeps its own weight and bias, so LARS adapts each on its own, and they are
    drawn as H :class:`LinearHead`'s of their spans' widths are (the same random numbers in the same order).
    """

    def __init__(self, dim: int, num_classes: int, count: int, spans: tuple[tuple[int, int], ...] = ()):
        super().__init__()
        self.spans = tuple(spans) or ((0, dim),)
        if any(not 0 <= a < b <= dim for a, b in self.spans):
            raise EmaeError(f"head spans {self.spans} must be column ranges of the {dim} features")
        self.count = count
        self.norm = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        self.linears = nn.ModuleList(probe_linear(b - a, num_classes) for a, b in self.spans for _ in range(count))

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        logits = []
        for s, (a, b) in enumerate(self.spans):
            group = self.linears[s * self.count:(s + 1) * self.count]
            weight = torch.cat([linear.weight for linear in group])  # (count * C, b - a)
            bias = torch.cat([linear.bias for linear in group])  # (count * C,)
            logits.append(F.linear(x[:, a:b], weight, bias))  # (B, count * C)
        return torch.cat(logits, dim=1).view(len(x), len(self.linears), -1).transpose(0, 1)  # (H, B, C)

    def head(self, h: int) -> tuple[LinearHead, tuple[int, int]]:
        """Head ``h`` alone, in eval mode, and the columns it reads: a :class:`LinearHead` (B, stop - start) ->
        (B, C) holding its weights and its span's running statistics."""
        a, b = self.spans[h // self.count]
        linear = self.linears[h]
        single = LinearHead(b - a, linear.out_features).to(linear.weight.device)
        single[0].running_mean.copy_(self.norm.running_mean[a:b])
        single[0].running_var.copy_(self.norm.running_var[a:b])
        single[1].load_state_dict(linear.state_dict())
        return single.eval(), (a, b)


def grid_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Sum over heads of each head's mean cross-entropy, in one call: (H, B, C), (B,) -> scalar. Heads share
    no weights, so each gets the gradient of its own loss. The classes go in dimension 1, a (H, C, B) view:
    torch's CPU log-softmax over a last dimension of 10 classes is about 3x slower than over dimension 1."""
    return F.cross_entropy(logits.transpose(1, 2), targets.expand(len(logits), -1), reduction="sum") / len(targets)


def lars(grid: HeadGrid | LinearHeads, lrs: list[float], momentum: float, weight_decay: float) -> Lars:
    """timm's LARS with one learning rate per head; as MAE's LARS, the trust ratio and weight decay apply to
    the weight matrices and not to the biases. The heads of one learning rate share a pair of parameter groups
    (weights, biases) stepped by timm's multi-tensor path, whose trust ratio is still each weight's own: the
    update is the per-head one in a few calls instead of two a head."""
    by_lr: dict[float, list[nn.Linear]] = {}
    for linear, lr in zip(grid.linears, lrs, strict=True):
        by_lr.setdefault(lr, []).append(linear)
    groups = []
    for lr, linears in by_lr.items():
        groups.append({"params": [linear.weight for linear in linears], "lr": lr, "weight_decay": weight_decay,
                       "always_adapt": True})
        groups.append({"params": [linear.bias for linear in linears], "lr": lr, "weight_decay": 0.0,
                       "always_adapt": False})
    return Lars(groups, lr=lrs[0], momentum=momentum, foreach=True)


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
              batch: int, log: Callable[[str], object] = print, lr_batch: int = 0) -> list[dict]:
    """Train ``heads`` on in-memory (N, D) features and (N,) labels, on their device, for ``cfg.epochs``: LARS
    and MAE's schedule, one update a batch of ``batch``, the data reshuffled every epoch (from
    :func:`evaluation.training.epoch_seed`; an incomplete last batch is left out), in float32. The heads of
    each span take ``cfg.blrs`` in order, each lr = base lr x ``lr_batch`` (0: ``batch``) / 256.

    Returns the history of the evaluated epochs on ``val`` (:func:`evaluation.training.evaluates`,
    ``cfg.eval_every``): ``epoch``, ``loss`` (the mean since the previous evaluation), ``lr`` (the largest),
    ``top1`` and ``top5`` (one value per head) and ``state`` (the heads' state dict then, on their device).
    Nothing is read back from the device between evaluations: the losses add up there, and a non-finite sum
    stops the run at the next evaluation. Progress: epochs of phase "train".
    """
    features, labels = train
    updates = len(labels) // batch
    if updates == 0:
        raise EmaeError(f"{cfg.data}: {len(labels)} training images are fewer than one batch of {batch}")
    if heads.count != len(cfg.blrs):
        raise EmaeError(f"{heads.count} heads a span for {len(cfg.blrs)} base learning rates {cfg.blrs}")
    optimizer = lars(heads, head_lrs(cfg.blrs, lr_batch or batch) * len(heads.spans), cfg.momentum, cfg.weight_decay)
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
                        "top1": acc[:, 0].tolist(), "top5": acc[:, 1].tolist(),
                        "state": {k: v.clone() for k, v in heads.state_dict().items()}})
        log(f"epoch {epoch}/{cfg.epochs}: " + describe(history[-1]))
        since, loss_sum = step, torch.zeros_like(loss_sum)
    return history


@dataclass
class ProbeRun:
    """A trained probe of either mode: its grid of validation accuracies, the head chosen on the validation
    split, that head's accuracy on the test split (evaluated once), and what the records say of its backbone
    and data."""

    grid: dict[str, dict[str, list[float]]]  # read-out -> base lr -> validation top-1 at each evaluated epoch
    epochs: list[int]  # the evaluated epochs
    selected: dict  # the chosen cell: readout, blr, lr, epoch
    val_top1: float  # the chosen cell's validation top-1
    test: tuple[float, float]  # its top-1 and top-5 on the test split (percent)
    few_shot: dict  # shots -> mean, std and draws of the few-shot probes (fast mode)
    batch: int
    splits: EvalSplits
    report: LoadReport
    config: dict | None  # the backbone's pre-training config (the records' backbone fields)
    arch: str
    features_reused: bool
    wall_time_s: float


def select_head(history: list[dict], last_only: bool = False) -> tuple[int, dict]:
    """(head, history entry) of the best validation top-1 among the evaluated entries (``last_only``: of the
    last); a tie goes to the earliest epoch, then to the first head."""
    entries = [e for e in history if "top1" in e]
    entries = entries[-1:] if last_only else entries
    return max(((h, e) for e in entries for h in range(len(e["top1"]))), key=lambda pair: pair[1]["top1"][pair[0]])


def cell_grid(history: list[dict], readouts: tuple[str, ...], blrs: tuple[float, ...]) -> dict:
    """read-out -> base lr -> the validation top-1 of that head at each evaluated entry of ``history`` (heads
    ordered read-out-major, as :class:`LinearHeads` orders its spans' heads)."""
    evaluated = [e for e in history if "top1" in e]
    return {readout: {str(blr): [e["top1"][r * len(blrs) + i] for e in evaluated] for i, blr in enumerate(blrs)}
            for r, readout in enumerate(readouts)}


def chosen_cell(h: int, entry: dict, readouts: tuple[str, ...], cfg: LinprobeConfig, batch: int) -> dict:
    """The cell of head ``h`` chosen at history ``entry``: its read-out, base lr, lr and epoch."""
    blr = cfg.blrs[h % len(cfg.blrs)]
    return {"readout": readouts[h // len(cfg.blrs)], "blr": blr, "lr": head_lrs((blr,), batch)[0],
            "epoch": entry["epoch"]}


def train_transform(cfg: LinprobeConfig, img_size: int):
    """MAE's linear-probe augmentation (``main_linprobe.py``): its TF-style random resized crop (bicubic),
    horizontal flip, normalise."""
    return pretrain_transform(img_size, cfg.mean, cfg.std, cfg.crop_min_scale, crop=TFRandomResizedCrop)


def _full_probe(ev: EvalRun) -> ProbeRun:
    """Frozen encoder + probes on augmented images, through the shared loop (checkpointed every epoch); the
    base lr chosen on the validation split at the last epoch, then the test split evaluated with that head."""
    cfg = ev.cfg
    weights = read_weights(cfg.checkpoint, cfg.arch)
    vit, report = build_vit(weights, img_size=cfg.img_size, global_pool=cfg.global_pool)
    if ev.dist.is_main:
        print_load(weights, report)
    img_size = vit.patch_embed.img_size[0]
    splits = eval_datasets(cfg, train_transform(cfg, img_size),
                           eval_transform(img_size, cfg.mean, cfg.std, cfg.crop_ratio), weights.info.in_chans)
    train = splits.train
    grid = HeadGrid(vit.num_features, splits.num_classes, len(cfg.blrs))
    model: nn.Module = nn.Sequential(FrozenEncoder(vit), grid).to(ev.device)
    if ev.dist.enabled:
        model = DistributedDataParallel(model, device_ids=[ev.device.index] if ev.device.type == "cuda" else None)
    train_loader, val_loader, sampler = image_loaders(train, splits.val, cfg.batch_size, cfg.num_workers, ev.dist,
                                                      cfg.seed, ev.device)
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
    fitted = ev.elapsed()
    h, entry = select_head(history, last_only=True)
    chosen = nn.Sequential(FrozenEncoder(vit), grid.heads[h])  # the test split sees the chosen head only
    test = evaluate(chosen, eval_loader(splits.test, cfg.batch_size, cfg.num_workers, ev.dist, ev.device), ev.device,
                    ev.amp_dtype, ev.dist)[0]
    readouts = (pool_readout(cfg.global_pool),)
    return ProbeRun(cell_grid(history, readouts, cfg.blrs), [e["epoch"] for e in history if "top1" in e],
                    chosen_cell(h, entry, readouts, cfg, batch), entry["top1"][h], tuple(test.tolist()), {}, batch,
                    splits, report, weights.config, weights.arch, False, wall + ev.elapsed() - fitted)


def probe_draws(features: Tensor, labels: Tensor, val: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor],
                num_classes: int, spans: tuple[tuple[int, int], ...], cfg: LinprobeConfig, size: int, lr_batch: int,
                last_only: bool, log: Callable[[str], object] = print
                ) -> list[tuple[list[dict], int, dict, list[float]]]:
    """Train a grid of heads (``len(cfg.blrs)`` for each of ``spans``, column ranges of D features) for each of G
    training sets side by side, in batches of ``size`` (:func:`fit_heads`; each lr = base lr x ``lr_batch`` /
    256), choose each set's head on the validation split (``last_only``: at the last evaluation) and score that
    head once on the test split.

    Args:
        features: (N, G * D), the G sets' features side by side (G = 1: one set); ``labels``: (N,), the same for
            every set. Each set's heads start from the same weights, drawn from ``cfg.seed``, so each trains as it
            would alone: its BatchNorm statistics are its own columns', its loss its own heads'.
        val, test: (M, D) features and (M,) labels.
    Returns:
        per set: (its history, the head chosen, the entry of the history it was chosen at, its test top-1 and top-5).
    """
    dim = val[0].shape[1]
    draws, grid = features.shape[1] // dim, len(spans) * len(cfg.blrs)
    torch.manual_seed(cfg.seed)
    stacked = tuple((a + g * dim, b + g * dim) for g in range(draws) for a, b in spans)
    heads = LinearHeads(features.shape[1], num_classes, len(cfg.blrs), stacked).to(features.device)
    with torch.no_grad():  # every set's heads from the first set's weights
        for i, linear in enumerate(heads.linears[grid:]):
            linear.load_state_dict(heads.linears[i % grid].state_dict())
    repeated_val = (val[0].repeat(1, draws) if draws > 1 else val[0], val[1])
    history = fit_heads(heads, (features, labels), repeated_val, cfg, size, log=log, lr_batch=lr_batch)
    runs = []
    for g in range(draws):
        own = [dict(entry, top1=entry["top1"][g * grid:(g + 1) * grid], top5=entry["top5"][g * grid:(g + 1) * grid])
               for entry in history]
        h, entry = select_head(own, last_only)
        heads.load_state_dict(entry["state"])
        single, (start, stop) = heads.head(g * grid + h)  # the test split sees the chosen head only
        with torch.no_grad():
            hits = topk_hits(single(test[0][:, start - g * dim:stop - g * dim]), test[1])[0]
        runs.append((own, h, entry, (100.0 * hits / len(test[1])).tolist()))
    return runs


def _fast_probe(ev: EvalRun) -> ProbeRun:
    """The grid of probes on cached features, or on raw pixels (one process, one batch per update), then the
    few-shot grids, the draws of each shot count side by side. The heads are drawn from ``cfg.seed`` after the
    features are made, so that a run on cached features trains what the run that extracted them did (extraction
    draws from the random state)."""
    cfg = ev.cfg
    data = evaluation_features(ev, cfg.features_dir)
    readouts = (data.default,) if data.default == PIXELS else (cfg.readouts or (data.default,))
    for name in readouts:
        if name not in data.readouts:
            raise EmaeError(f"read-out {name!r} is not one of this backbone's: {sorted(data.readouts)}")
    spans = tuple(data.readouts[name] for name in readouts)
    train, val, test = [(x.to(ev.device), y.to(ev.device)) for x, y in (data.train, data.val, data.test)]
    batch, classes = cfg.effective_batch or cfg.batch_size, data.splits.num_classes

    [(history, h, entry, (top1, top5))] = probe_draws(*train, val, test, classes, spans, cfg, batch, batch,
                                                      last_only=False)
    few_shot, once = {}, dataclasses.replace(cfg, eval_every=cfg.epochs)  # few-shot: chosen at the last epoch
    for shots in cfg.shots:
        subsets = [index.to(ev.device) for index in few_shot_subsets(train[1], classes, shots, cfg.shot_subsets,
                                                                     cfg.seed)]
        labels = train[1][subsets[0]]  # class by class: the same in every draw
        runs = probe_draws(torch.cat([train[0][index] for index in subsets], dim=1), labels, val, test, classes,
                           spans, once, len(labels), batch, last_only=True,
                           log=lambda line: print(f"{shots}-shot probes: {line}"))
        few_shot[str(shots)] = few_shot_summary([
            dict(chosen_cell(shot_h, shot_entry, readouts, cfg, batch),
                 grid=cell_grid(shot_history, readouts, cfg.blrs), val_top1=shot_entry["top1"][shot_h], top1=shot_top1)
            for shot_history, shot_h, shot_entry, (shot_top1, _) in runs])
    return ProbeRun(cell_grid(history, readouts, cfg.blrs), [e["epoch"] for e in history],
                    chosen_cell(h, entry, readouts, cfg, batch), entry["top1"][h], (top1, top5), few_shot, batch,
                    data.splits, data.report, data.config, data.arch, data.reused, ev.elapsed())


def run(cfg: LinprobeConfig):
    """Run (or, when its records exist, skip) a linear probe; returns its records."""
    ev, done = start_run(cfg, distributed=not cfg.fast)
    if done:
        print_records(done, " (already done: the records exist)")
        return done
    probe = _fast_probe(ev) if cfg.fast else _full_probe(ev)
    if not ev.dist.is_main:
        return []
    chosen = probe.selected
    extra = {"mode": "fast" if cfg.fast else "full", "epochs": cfg.epochs, "batch_size": probe.batch, **chosen,
             "grid": probe.grid, "evaluated_epochs": probe.epochs, **selection(probe.splits, chosen, probe.val_top1),
             "few_shot": probe.few_shot, "train_images": len(probe.splits.train), "val_images": len(probe.splits.val),
             "test_images": len(probe.splits.test), "features_reused": probe.features_reused,
             "load_report": probe.report.to_dict()}
    metrics = {"top1": probe.test[0], "top5": probe.test[1],
               **{f"top1_{shots}shot": cell["mean"] for shots, cell in probe.few_shot.items()}}
    return write_run_records(ev, probe.config, probe.arch, metrics, probe.wall_time_s, extra)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, LinprobeConfig)


def main(args: argparse.Namespace) -> int:
    run(resolve_config(LinprobeConfig, args))
    return 0
