"""``emae pretrain``: the pre-training engine.

Composes the config, data, model, masks and losses with timm's AdamW and per-iteration cosine schedule,
bf16 autocast where the device has it, DDP under ``torchrun``, atomic checkpoints and exact resume.

Output folder: ``config.json``, ``checkpoint.pth`` (the latest, what ``--resume`` continues),
``checkpoint-EPOCH.pth`` (every ``keep_every`` epochs), ``log.txt`` (one JSON line per logged step),
``records.jsonl`` (the run's result record) and ``tb/`` (TensorBoard, when installed).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from timm.optim import create_optimizer_v2, param_groups_weight_decay
from timm.scheduler import CosineLRScheduler
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from emae import progress
from emae import steps as gradient_steps
from emae.checkpoint import load_checkpoint, save_checkpoint, untrained_checkpoint
from emae.config import PretrainConfig, add_config_arguments, explicit_values, resolve_config
from emae.data import PretrainImages, SkipBadImages, build_dataset, collate_counting_skipped
from emae.distributed import DistInfo, all_reduce_mean, init_distributed, shutdown_distributed
from emae.errors import EmaeError
from emae.losses import pixel_targets
from emae.masking import make_part_masks, noise_shape, per_image_noise
from emae.methods import objective
from emae.models import MaskedAutoencoderViT, build_model, init_model
from emae.monitor import KnnMonitor, build_monitor
from emae.records import RECORDS_FILE, RUN_FIELDS, Record, backbone_fields, provenance, write_records
from emae.settings import autocast_dtype, pick_device
from emae.steps import GradientSteps

LAST = "checkpoint.pth"
# what a resumed run may change: how it runs (emae.records.RUN_FIELDS), and its length (a schedule extended)
RESUME_OVERRIDES = frozenset({f.name for f in fields(PretrainConfig)} & (RUN_FIELDS | {"epochs"}) - {"output_dir"})


def accumulation_steps(cfg: PretrainConfig, world_size: int) -> int:
    """Batches per update of ``cfg`` on ``world_size`` processes (:func:`emae.steps.accumulation_steps`)."""
    return gradient_steps.accumulation_steps(cfg.effective_batch, cfg.batch_size, world_size)


def learning_rate(cfg: PretrainConfig, world_size: int) -> float:
    """The absolute lr: ``lr`` if given, else ``blr x effective batch / 256`` (MAE's rule)."""
    return cfg.lr or cfg.blr * cfg.batch_size * world_size * accumulation_steps(cfg, world_size) / 256


def cosine_schedule(optimizer: torch.optim.Optimizer, cfg: PretrainConfig, total_updates: int) -> CosineLRScheduler:
    """MAE's per-update schedule over ``total_updates``: linear warm-up from 0 for the config's share of them
    (``warmup_epochs / epochs``), then half-cycle cosine to ``min_lr``."""
    warmup = round(total_updates * cfg.warmup_epochs / cfg.epochs)
    return CosineLRScheduler(optimizer, t_initial=max(total_updates - warmup, 1), lr_min=cfg.min_lr, warmup_t=warmup,
                             warmup_lr_init=0.0, warmup_prefix=True, t_in_epochs=False)


@dataclass(frozen=True)
class TimeBudget:
    """A pre-training of ``seconds`` of training time (``--time-budget-s``) whose schedule follows the clock: before
    each update the run stands at :meth:`position` in its epochs' schedule (``cap`` updates: the config's share of
    warm-up, then cosine), the larger of the share of the budget spent and the share of the updates made, and it
    ends once the budget is spent (:meth:`spent`) or its epochs are made. However the machine's speed changes
    during the run, it overshoots its budget by at most one update and its schedule runs to its end (the last
    update at most one update's share of the budget from it)."""

    seconds: float
    cap: int

    def position(self, step: int, spent_s: float) -> float:
        """Where in the ``cap`` updates' schedule the next update stands, in updates."""
        return min(float(self.cap), max(float(step), self.cap * spent_s / self.seconds))

    def spent(self, step: int, spent_s: float) -> bool:
        """Whether the run ends after ``step`` updates and ``spent_s`` training seconds."""
        return step >= self.cap or spent_s >= self.seconds


def build_optimizer(model: MaskedAutoencoderViT, cfg: PretrainConfig, lr: float) -> torch.optim.Optimizer:
    """AdamW with official MAE's parameter groups (``main_pretrain.py``: timm's ``add_weight_decay`` without a
    skip list): no decay on 1-D parameters (norms) and biases, decay on every other trainable parameter, the
    3-D ``cls_token`` and ``mask_token`` among them; the fixed sin-cos position embeddings do not train and
    are left out. The fused kernel (one pass over the parameters instead of a loop of small ops: about 5x
    faster steps of the optimiser on a CPU)."""
    groups = param_groups_weight_decay(model, cfg.weight_decay)  # not the model's no_weight_decay() names
    return create_optimizer_v2(groups, "adamw", lr=lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.betas),
                               fused=True)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict, path: str | os.PathLike) -> None:
    """Load a checkpoint's optimizer state; one whose parameter groups are not the optimizer's (a run begun
    while ``cls_token`` and ``mask_token`` were not decayed) is an error naming the checkpoint."""
    try:
        optimizer.load_state_dict(state)
    except ValueError as e:
        raise EmaeError(f"{path}: its optimizer state does not fit this version's parameter groups ({e}); a run "
                        f"begun before cls_token and mask_token were decayed (as official MAE decays them) "
                        f"cannot be resumed: start it again") from None


def flops_per_iteration(cfg: PretrainConfig, batch: int, observer=None) -> int:
    """FLOPs of one forward + backward of a batch, counted by torch's FLOP counter on the meta device.
    ``observer`` (a ``TorchDispatchMode``) sees the same operations: the benchmarks note the matrix products."""
    with torch.device("meta"):
        model = build_model(cfg.arch, cfg.img_size, cfg.in_chans)
        imgs = torch.zeros(batch, cfg.in_chans, cfg.img_size, cfg.img_size)
        noise = torch.zeros(noise_shape(cfg.method_spec.masking, batch, model.num_patches, cfg.parts))
    masks = make_part_masks(cfg.method_spec.masking, noise, cfg.parts, cfg.mask_ratio)
    return forward_backward_flops(lambda: compute_loss(model, imgs, masks, cfg)[0], observer)


def forward_backward_flops(loss_fn, observer=None) -> int:
    """FLOPs of ``loss_fn()`` and of the backward of the scalar it returns, by torch's FLOP counter (matrix
    products, convolutions, attention). On the meta device nothing is computed, and attention runs as its two
    batched products, which the counter counts (the fused CPU attention kernel it does not)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, observer or nullcontext():
        loss_fn().backward()
    return counter.get_total_flops()


def compute_loss(model: torch.nn.Module, imgs: torch.Tensor, masks, cfg: PretrainConfig,
                 amp_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The forward pass of a batch (under autocast) and the method's objective (:func:`emae.methods.objective`)."""
    with torch.autocast(imgs.device.type, dtype=amp_dtype) if amp_dtype else nullcontext():
        pred = model(imgs, masks)
    target = pixel_targets(imgs, unwrap(model).patch_size, cfg.norm_pix_loss)
    return objective(pred.float(), target, masks.mask, *cfg.loss_weights())


def rng_state() -> dict:
    """The global random states, as tensors and plain values (loadable with weights_only). The masks and the
    augmentations need none: they are drawn per image from (seed, epoch, index) (:func:`per_image_noise`,
    :class:`emae.data.PretrainImages`), the order from the sampler's (seed, epoch)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`'s states. The ``mask`` entry of a checkpoint written when masks came from a
    generator seeded by rank is not restored: nothing draws from it now (:func:`train` says so on resume)."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _log_entry(line: str) -> dict | None:
    """The entry a line of ``log.txt`` holds, or None when it is not one (a JSON object with a ``step``)."""
    try:
        entry = json.loads(line)
    except json.JSONDecodeError:
        return None
    return entry if isinstance(entry, dict) and "step" in entry else None


class MetricsLog:
    """``log.txt``: one JSON line per logged step (rank 0), plus TensorBoard scalars when installed."""

    def __init__(self, out: Path, enabled: bool):
        self.path = out / "log.txt"
        self.enabled = enabled
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # TensorBoard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self.writer = SummaryWriter(str(out / "tb"))

    def truncate_after(self, step: int) -> None:
        """Drop lines of steps after ``step`` (written by a run that died before its next checkpoint), and a
        last line cut off mid-write by that death (reported on stderr). Any other unreadable line is an error."""
        if not self.enabled or not self.path.exists():
            return
        text = self.path.read_text(encoding="utf-8")
        lines = text.splitlines()
        if lines and not text.endswith("\n") and _log_entry(lines[-1]) is None:
            print(f"{self.path}: dropped its last line, cut off when the run stopped: {lines[-1][:80]!r}",
                  file=sys.stderr)
            lines.pop()
        kept = []
        for number, line in enumerate(lines, 1):
            if not line:
                continue
            entry = _log_entry(line)
            if entry is None:
                raise EmaeError(f"{self.path}, line {number}: not a log entry (a JSON object with a 'step'): "
                                f"{line[:80]!r}")
            if entry["step"] <= step:
                kept.append(line)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(ln + "\n" for ln in kept))
        os.replace(tmp, self.path)

    def write(self, entry: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
        if self.writer is not None:
            for key, value in entry.items():
                if key not in ("step", "epoch"):
                    self.writer.add_scalar(f"train/{key}", value, entry["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def train(cfg: PretrainConfig, resume: str | os.PathLike | None = None) -> dict:
    """Pre-train (or continue) a run; returns a summary (final loss, wall time, images/s, paths)."""
    cfg.validate()
    device = pick_device(cfg.device)
    info = init_distributed(device.type, cfg.dist_timeout)
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    torch.manual_seed(cfg.seed + info.rank)
    random.seed(cfg.seed + info.rank)
    np.random.seed(cfg.seed + info.rank)
    out = Path(cfg.output_dir)
    if cfg.epochs == 0:  # the untrained baseline: no data is read, no update made
        if info.is_main:
            start_folder(out, cfg)
            save_checkpoint(untrained_checkpoint(cfg), out / LAST)
        return {"output_dir": str(out), "checkpoint": str(out / LAST), "epochs": 0, "steps": 0, "wall_time_s": 0.0}

    # what one process computes, on any number: each image's crop, flip and mask come from (seed, epoch, index);
    # the sampler's permutation of (seed, epoch) is the same for every world size, and rank r's batches of B / W
    # take every W-th image of one process's batches of B (docs/reliability.md, "DDP computes what one process
    # computes")
    images = PretrainImages(build_dataset(cfg.dataset, cfg.data, True, None, cfg.in_chans, cfg.subset),
                            cfg.img_size, cfg.mean, cfg.std, cfg.crop_min_scale, cfg.seed)
    dataset = SkipBadImages(images) if cfg.skip_bad_images else images
    sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                 seed=cfg.seed, drop_last=True)
    loader_generator = torch.Generator()
    # workers start with each epoch's iterator, so they copy the dataset after images.set_epoch(epoch)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                        pin_memory=device.type == "cuda", drop_last=True, collate_fn=collate_counting_skipped,
                        generator=loader_generator, persistent_workers=False)
    accum = accumulation_steps(cfg, info.world_size)
    updates_per_epoch = len(loader) // accum
    if updates_per_epoch == 0:
        raise EmaeError(f"{cfg.data}: {len(dataset)} images are fewer than one effective batch of "
                        f"{cfg.batch_size * info.world_size * accum}")

    model: torch.nn.Module = init_model(cfg.arch, cfg.img_size, cfg.in_chans, cfg.seed + info.rank).to(device)
    lr = learning_rate(cfg, info.world_size)
    optimizer = build_optimizer(model, cfg, lr)
    total_updates = cfg.epochs * updates_per_epoch
    amp_dtype = autocast_dtype(cfg.amp, device)
    start_epoch, wall_time = 0, 0.0
    ckpt = load_checkpoint(resume) if resume is not None else None
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise EmaeError(f"{resume}: its weights do not fit its config's model ({cfg.arch}): "
                            f"{' '.join(str(e).split())[:300]}") from None
        load_optimizer_state(optimizer, ckpt["optimizer"], resume)
    monitor = build_monitor(cfg, device, cfg.batch_size * info.world_size * accum)
    if info.is_main:  # the data, model and checkpoint are good: the run's folder may be written
        start_folder(out, cfg)
    log = MetricsLog(out, info.is_main)
    if info.enabled:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    budget = TimeBudget(cfg.time_budget_s, total_updates) if cfg.time_budget_s > 0 else None
    if budget is not None and info.is_main:
        print(f"time budget {budget.seconds:.0f} s: the schedule of {cfg.epochs} epochs ({total_updates} updates) "
              f"follows the training time, and the run ends when it is spent", flush=True)
    run = PretrainRun(cfg, model, torch.compile(model) if cfg.compile else model, loader,
                      cosine_schedule(optimizer, cfg, total_updates),
                      GradientSteps(model, optimizer, device.type, amp_dtype, accum, cfg.clip_grad), log, info, out,
                      total_updates=total_updates, budget=budget, monitor=monitor)
    if ckpt is not None:
        run.steps.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        if "mask" in ckpt["rng"] and info.is_main:
            print(f"{resume}: written when masks came from a generator seeded by rank; its remaining epochs draw "
                  f"each image's mask and augmentation from (seed, epoch, index) instead", file=sys.stderr)
        start_epoch, run.step, wall_time = ckpt["epoch"], ckpt["step"], ckpt["wall_time_s"]
        run.clock_s = wall_time
    log.truncate_after(run.step)  # the lines of a run that died before its next checkpoint (or before its first)

    flops = flops_per_iteration(cfg, cfg.batch_size * info.world_size * accum)
    if monitor is not None:  # the first point (a fresh run's), or a resumed run's curve
        monitor.begin(unwrap(model), log, flops, ckpt)
    last_loss = math.nan
    for epoch in range(start_epoch, cfg.epochs):
        sampler.set_epoch(epoch)
        images.set_epoch(epoch)
        loader_generator.manual_seed(cfg.seed * 100_003 + epoch)
        started, paused = time.perf_counter(), run.paused_s
        run.wall_before = wall_time
        last_loss, throughput = train_one_epoch(run, epoch)
        wall_time += time.perf_counter() - started - (run.paused_s - paused)  # the monitor's seconds left out
        # a budgeted run that has made its updates ends here, and is saved as finished (its last epoch)
        done = cfg.epochs if run.step >= run.total_updates else epoch + 1
        if info.is_main and (done % cfg.save_every == 0 or done == cfg.epochs
                             or (cfg.keep_every and done % cfg.keep_every == 0)):
            ckpt = {"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                    "scaler": run.steps.scaler.state_dict(), "epoch": done, "step": run.step,
                    "total_updates": run.total_updates, "wall_time_s": wall_time, "loss": last_loss,
                    "rng": rng_state(), "config": cfg.to_dict()}
            if run.monitor is not None:
                ckpt["monitor"] = run.monitor.state_dict()
            save_checkpoint(ckpt, out / LAST)
            if cfg.keep_every and done % cfg.keep_every == 0:
                save_checkpoint(ckpt, out / f"checkpoint-{done:04d}.pth")
        if done == cfg.epochs:
            break
    log.close()
    summary = {"output_dir": str(out), "checkpoint": str(out / LAST), "epochs": cfg.epochs, "steps": run.step,
               "epochs_run": run.step / updates_per_epoch, "wall_time_s": wall_time, "flops_per_iter": flops,
               "images_per_s": throughput if start_epoch < cfg.epochs else math.nan}
    if info.is_main and start_epoch < cfg.epochs:
        summary["loss"] = last_loss
        monitored = run.monitor.summary(wall_time) if run.monitor is not None else None
        write_pretrain_record(cfg, out, summary, accum * cfg.batch_size * info.world_size, monitored)
        if monitored is not None:
            print(run.monitor.cost_line(wall_time), flush=True)
    return summary


def start_folder(out: Path, cfg: PretrainConfig) -> None:
    """Create the run's folder with its ``config.json``; drop temporary files of a run killed mid-write."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    for stale in out.glob(".checkpoint*.tmp"):
        stale.unlink()


def unwrap(model: torch.nn.Module) -> MaskedAutoencoderViT:
    """The model inside a compiled and/or DDP wrapper."""
    model = getattr(model, "_orig_mod", model)  # torch.compile's OptimizedModule
    return model.module if isinstance(model, DistributedDataParallel) else model


@dataclass
class PretrainRun:
    """What the epochs of one pre-training share: the loop's one state object."""

    cfg: PretrainConfig
    model: torch.nn.Module  # the model, DDP-wrapped where distributed
    net: torch.nn.Module  # what the forward pass runs: ``model`` or its compiled wrapper
    loader: DataLoader
    scheduler: CosineLRScheduler
    steps: GradientSteps
    log: MetricsLog
    info: DistInfo
    out: Path
    step: int = 0  # optimizer updates so far
    total_updates: int = 0  # where the run ends: its epochs' updates, or those made when its time budget is spent
    budget: TimeBudget | None = None
    wall_before: float = 0.0  # training seconds of the epochs before the current one
    clock_s: float = 0.0  # training seconds after the last update (the processes' mean)
    monitor: KnnMonitor | None = None  # the online monitor (emae.monitor), if the config has one
    paused_s: float = 0.0  # seconds of this process's epochs not spent training (the monitor's)


def train_one_epoch(run: PretrainRun, epoch: int) -> tuple[float, float]:
    """One pass over the data; returns (mean loss of the epoch, images/s) and advances ``run.step``."""
    cfg, info, steps = run.cfg, run.info, run.steps
    device = next(run.model.parameters()).device
    strategy = cfg.method_spec.masking
    image_noise = noise_shape(strategy, 1, unwrap(run.model).num_patches, cfg.parts)[1:]
    usable = len(run.loader) // steps.accum * steps.accum
    epoch_loss, epoch_updates, images, started = 0.0, 0, 0, time.perf_counter()
    # loss, pixel, consistency and spread of the current update, and the training seconds after it
    terms = torch.zeros(5, device=device)
    skipped = 0
    bar = tqdm(run.loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not info.is_main or None, leave=False)
    for it, (imgs, _, index, n_skipped) in enumerate(bar):
        if it >= usable or run.step >= run.total_updates:
            break
        if it % steps.accum == 0:
            run.scheduler.step_update(run.step if run.budget is None else run.budget.position(run.step, run.clock_s))
        imgs = imgs.to(device, non_blocking=True)
        noise = per_image_noise(cfg.seed, epoch, index.to(device, non_blocking=True), image_noise)
        masks = make_part_masks(strategy, noise, cfg.parts, cfg.mask_ratio)
        with steps.accumulating(it):
            loss, parts = compute_loss(run.net, imgs, masks, cfg, steps.amp_dtype)
            steps.backward(loss, lambda: f"at step {run.step + 1} (epoch {epoch + 1}); stopping. The last good "
                                         f"checkpoint is {run.out / LAST}"
                                         + ("" if (run.out / LAST).exists() else " (none written yet)"))
        terms[:4] += torch.stack([loss.detach(), parts["pixel_loss"], parts["consistency_loss"],
                                  parts["prediction_spread"]]) / steps.accum
        images += imgs.shape[0] * info.world_size
        skipped += n_skipped
        if not steps.completes(it):
            continue
        steps.update()
        run.step += 1
        terms[4] = run.wall_before + time.perf_counter() - started
        mean_terms = all_reduce_mean(terms, info).tolist()
        terms.zero_()
        run.clock_s = mean_terms[4]  # the processes' mean: every one ends its budget at the same update
        if run.budget is not None and run.budget.spent(run.step, run.clock_s):
            run.total_updates = run.step
        if info.is_main:
            progress.report(run.step, run.total_updates, "steps", "pretrain")
        epoch_loss += mean_terms[0]
        epoch_updates += 1
        if run.monitor is not None:  # its seconds are left out of the epoch's clock
            paused = run.monitor.after_update(unwrap(run.model), run.step, epoch + 1, usable // steps.accum,
                                              run.total_updates, run.wall_before + time.perf_counter() - started)
            started += paused
            run.paused_s += paused
        if run.step % cfg.log_every == 0:
            entry = {"step": run.step, "epoch": epoch + 1, "loss": mean_terms[0], "pixel_loss": mean_terms[1],
                     "consistency_loss": mean_terms[2], "prediction_spread": mean_terms[3],
                     "lr": steps.optimizer.param_groups[0]["lr"],
                     "images_per_s": images / (time.perf_counter() - started)}
            if skipped:
                entry["skipped_images"] = skipped
            run.log.write(entry)
            bar.set_postfix(loss=f"{mean_terms[0]:.4f}", lr=f"{entry['lr']:.2e}")
    return epoch_loss / max(epoch_updates, 1), images / (time.perf_counter() - started)


def write_pretrain_record(cfg: PretrainConfig, out: Path, summary: dict, effective_batch: int,
                          monitor: dict | None = None) -> None:
    extra = {"images_seen": summary["steps"] * effective_batch, "flops_per_iter": summary["flops_per_iter"],
             "iterations": summary["steps"], "epochs_run": summary["epochs_run"], "batch_size": effective_batch,
             "parts": cfg.num_parts(), "images_per_s": summary["images_per_s"], "output_dir": str(out)}
    if cfg.time_budget_s:
        extra["time_budget_s"] = cfg.time_budget_s
    if monitor is not None:  # KnnMonitor.summary: its settings, cost and curve
        extra["monitor"] = monitor
    record = Record(**backbone_fields(cfg.to_dict(), cfg.arch), protocol="pretrain", metric="loss",
                    value=summary["loss"], dataset=cfg.dataset, seed=cfg.seed, extra=extra,
                    **provenance(cfg.to_dict(), out / LAST, summary["wall_time_s"]))
    write_records(out / RECORDS_FILE, [record], echo=False)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--resume", nargs="?", const="auto", metavar="CHECKPOINT",
                        help="continue a run: from CHECKPOINT, or (no value) from OUTPUT_DIR/checkpoint.pth")


def resume_config(args: argparse.Namespace) -> tuple[PretrainConfig, Path]:
    """The config of the run being resumed; explicit flags may change only how it runs (RESUME_OVERRIDES)."""
    given = explicit_values(args)
    if args.resume == "auto":
        path = Path(given.get("output_dir") or resolve_config(args).output_dir) / LAST
    else:
        path = Path(args.resume)
    ckpt = load_checkpoint(path)
    if "config" not in ckpt:
        raise EmaeError(f"{path}: has no 'config'; only checkpoints of emae pretrain can be resumed")
    lacking = [k for k in ("model", "optimizer", "scaler", "epoch", "step", "wall_time_s", "rng") if k not in ckpt]
    if lacking:
        raise EmaeError(f"{path}: not a checkpoint emae pretrain can resume: it has no {lacking}")
    values = dict(ckpt["config"])
    changed = {k: v for k, v in given.items() if k not in RESUME_OVERRIDES and k != "output_dir"
               and PretrainConfig.from_dict({k: v}).to_dict()[k] != values.get(k)}
    if changed:
        raise EmaeError(f"{path}: cannot change {sorted(changed)} when resuming; only {sorted(RESUME_OVERRIDES)}")
    values.update({k: v for k, v in given.items() if k in RESUME_OVERRIDES})
    return PretrainConfig.from_dict(values, source=str(path)).validate(), path


def main(args: argparse.Namespace) -> int:
    if args.resume:
        cfg, path = resume_config(args)
    else:
        cfg, path = resolve_config(args), None
        if (Path(cfg.output_dir) / LAST).exists():
            raise EmaeError(f"{Path(cfg.output_dir) / LAST}: this folder holds a run; continue it with --resume or "
                            f"choose another --output-dir")
    summary = train(cfg, resume=path)
    shutdown_distributed()
    print(json.dumps(summary, indent=2))
    return 0
