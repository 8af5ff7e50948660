"""What every evaluation shares: its config fields and flags, the output folder, the device, and the records.

A config is resolved as dataclass defaults (MAE's recipe) < preset (:mod:`evaluation.presets`) <
``--config`` file (YAML or JSON) < explicit flags, and saved as ``OUTPUT_DIR/config.json``. The output
folder defaults to ``runs/eval/PROTOCOL-PRESET-SHA`` (the first 12 hex digits of the checkpoint's SHA-256),
so a re-run of the same evaluation finds its own folder: one whose ``records.jsonl`` already holds the
records of this config and checkpoint is not run again, one with a ``checkpoint.pth`` continues from it,
and a folder that holds the records or training state of another evaluation is refused rather than mixed.
"""
from __future__ import annotations

import argparse
import os
import random
import time
import typing
from dataclasses import dataclass
from operator import methodcaller
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset
from torchvision import transforms

from emae import records, settings
from emae.checkpoint import load_checkpoint, save_checkpoint, untrained_checkpoint
from emae.config import PretrainConfig, preset_config
from emae.data import FASHION_MNIST_DIR, FASHION_MNIST_MEAN, FASHION_MNIST_STD, build_dataset
from emae.distributed import DistInfo, init_distributed
from emae.errors import EmaeError
from emae.records import (PIXELS, RECORDS_FILE, Record, backbone_fields, changed_fields, check_rerun, provenance,
                          sha256_file, variant_settings, write_records)
from emae.settings import autocast_dtype, pick_device
from evaluation.presets import preset_values

CHECKPOINT = "checkpoint.pth"  # an evaluation's training state in its output folder
POOLS = ("token", "avg")
RANDOM = "random"  # --checkpoint random: the untrained backbone


@dataclass
class EvalConfig(settings.CommandConfig):
    """The fields every evaluation has. Subclasses add their protocol's and may change defaults."""

    protocol: typing.ClassVar[str] = ""  # the records' protocol: knn, linprobe, finetune
    takes_pixels: typing.ClassVar[bool] = False  # whether --checkpoint pixels (features = raw pixels) applies
    # our pre-training checkpoint, an official MAE checkpoint or a timm ViT state dict; or a baseline: "random"
    # (the untrained backbone of ``arch`` (default: the pre-training preset's) and ``seed``) or "pixels" (raw pixels)
    checkpoint: str = ""
    arch: str = ""  # a registered architecture the checkpoint must fit ("": read from the weights)
    preset: str = "fmnist"
    # data: three disjoint splits (:func:`eval_datasets`): train, validation (every choice) and test (reported)
    dataset: str = "fashion-mnist"  # fashion-mnist, or imagefolder (class folders DATA/TRAIN_SPLIT, DATA/TEST_SPLIT)
    data: str = FASHION_MNIST_DIR
    train_split: str = "train"  # imagefolder only
    val_split: str = ""  # imagefolder only: a held-out folder DATA/VAL_SPLIT ("": carved from DATA/TRAIN_SPLIT)
    test_split: str = "val"  # imagefolder only: the reported split (ImageNet's val)
    val_size: int = 10000  # fashion-mnist: the last N training images are the validation split
    val_fraction: float = 0.01  # imagefolder without val_split: the last share of each class's training images
    train_limit: int = 0  # use only the first N training images (0: all but the validation split)
    val_limit: int = 0  # use only the first N validation images (0: all)
    test_limit: int = 0  # use only the first N test images (0: all)
    eval_name: str = "fashion-mnist test"  # the records' dataset field: the name of the test split
    img_size: int = 0  # 0: the checkpoint's pre-training size (position embeddings are resampled otherwise)
    crop_ratio: float = 1.0  # evaluation resize to img_size / crop_ratio, then centre crop (MAE: 224 / 256)
    mean: tuple[float, ...] = FASHION_MNIST_MEAN
    std: tuple[float, ...] = FASHION_MNIST_STD
    num_workers: int = 1
    # model
    global_pool: str = "token"  # token (cls token) or avg (global average pooling + fc_norm)
    batch_size: int = 256  # per process
    # run
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda
    threads: int = 0  # CPU threads of torch (0: torch's default); 1 is fastest on a CPU shared with other jobs
    dist_timeout: int = 600  # under torchrun: seconds a collective may wait for a peer before the run fails
    amp: str = "auto"  # auto (bf16 on a supporting GPU, else none), bf16, fp16, none
    output_dir: str = ""  # "": runs/eval/PROTOCOL-PRESET-SHA
    # the records' backbone fields where the checkpoint has no pre-training config (official MAE, timm)
    method: str = ""
    pretrain_epochs: int = 0
    pretrain_data: str = ""

    def validate(self) -> "EvalConfig":
        if not self.checkpoint:
            raise EmaeError("--checkpoint is required")
        if self.checkpoint == PIXELS and not self.takes_pixels:
            raise EmaeError(f"--checkpoint pixels (the raw-pixel baseline) has no backbone to {self.protocol}; it "
                            f"applies to kNN and the fast linear probe")
        if self.global_pool not in POOLS:
            raise EmaeError(f"global_pool must be one of {POOLS}, got {self.global_pool!r}")
        if self.amp not in ("auto", "bf16", "fp16", "none"):
            raise EmaeError(f"amp must be auto, bf16, fp16 or none, got {self.amp!r}")
        if len(self.mean) != len(self.std) or not self.mean:
            raise EmaeError(f"mean and std need the same number of values (1 or 3), got {self.mean} / {self.std}")
        if self.threads < 0:
            raise EmaeError(f"threads must be >= 0, got {self.threads}")
        if self.batch_size < 1:
            raise EmaeError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 < self.crop_ratio <= 1:
            raise EmaeError(f"crop_ratio must be in (0, 1], got {self.crop_ratio}")
        if min(self.train_limit, self.val_limit, self.test_limit, self.val_size) < 0:
            raise EmaeError(f"train_limit, val_limit, test_limit and val_size must be >= 0, got {self.train_limit}, "
                            f"{self.val_limit}, {self.test_limit}, {self.val_size}")
        if not 0 < self.val_fraction < 1:
            raise EmaeError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.dataset == "imagefolder" and self.val_split and self.val_split in (self.train_split, self.test_split):
            raise EmaeError(f"val_split {self.val_split!r} must be a folder of its own, neither train_split "
                            f"{self.train_split!r} nor test_split {self.test_split!r}: selecting on the training or "
                            f"the reported split is not a held-out choice")
        return self

    @classmethod
    def from_dict(cls, values: dict, source: str = "config"):
        return settings.from_dict(cls, values, source=f"{source} ({cls.protocol})")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type[EvalConfig]) -> None:
    """``--config FILE`` and one ``--flag`` per config field; a flag not given leaves the preset's value."""
    settings.add_arguments(parser, cls, help_for={
        "preset": "named settings (default fmnist): fmnist, imagenet-vit-b, imagenet-vit-l, imagenet-vit-h"})


def resolve_config(cls: type[EvalConfig], args: argparse.Namespace):
    """defaults < preset < config file < explicit flags, validated; the checkpoint path made absolute."""
    merged = settings.resolve(cls, args, lambda name: preset_values(name, cls.protocol))
    cfg = cls.from_dict(merged).validate()
    if cfg.checkpoint == RANDOM:
        cfg.checkpoint = str(untrained_file(cfg))
    if cfg.checkpoint != PIXELS:
        cfg.checkpoint = str(Path(cfg.checkpoint).absolute())
    return cfg


def untrained_file(cfg: EvalConfig, folder: str | os.PathLike = "runs/baselines") -> Path:
    """``--checkpoint random``: the untrained backbone of ``cfg.arch`` (default: the pre-training preset's), at
    ``cfg.img_size`` (default: the preset's), of ``cfg.seed``, as ``emae pretrain --epochs 0`` writes it;
    written once to ``folder`` and read from there afterwards."""
    values = {k: v for k, v in dict(arch=cfg.arch, img_size=cfg.img_size).items() if v}
    pretrain = PretrainConfig.from_dict({**preset_config(PretrainConfig.preset).to_dict(), **values,
                                         "in_chans": len(cfg.mean), "seed": cfg.seed, "epochs": 0}).validate()
    path = Path(folder) / f"untrained-{pretrain.arch}-{pretrain.img_size}px-{pretrain.in_chans}ch-seed{cfg.seed}.pth"
    if not path.exists():
        save_checkpoint(untrained_checkpoint(pretrain), path)
    return path.absolute()


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


@dataclass
class EvalRun:
    """One evaluation being run: its config, output folder, device and the checkpoint's hash."""

    cfg: EvalConfig
    out: Path
    device: torch.device
    amp_dtype: torch.dtype | None
    dist: DistInfo
    checkpoint_sha256: str
    started: float  # time.perf_counter() at the start

    @property
    def records_path(self) -> Path:
        return self.out / RECORDS_FILE

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def open_folder(self) -> None:
        """Create the output folder with the run's ``config.json`` (main process). Called when the run is about
        to write its first output, so that a run stopped by bad input leaves nothing behind."""
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            self.cfg.save(self.out)


def start_run(cfg: EvalConfig, distributed: bool = False) -> tuple[EvalRun, list[Record]]:
    """Set up a run: (the run, the records it already wrote). Records mean it finished and need no re-run.

    ``distributed``: join the ``torchrun`` process group; otherwise launching several processes is an error.
    """
    started = time.perf_counter()
    path = Path(cfg.checkpoint)
    if cfg.checkpoint != PIXELS and not path.exists():
        raise EmaeError(f"{path}: checkpoint not found")
    device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if distributed:
        info = init_distributed(device.type, cfg.dist_timeout)
        if device.type == "cuda":
            device = torch.device("cuda", info.local_rank)
    else:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise EmaeError(f"{cfg.protocol} runs in one process; launch it without torchrun")
        info = DistInfo()
    seed_everything(cfg.seed + info.rank)
    sha = "" if cfg.checkpoint == PIXELS else sha256_file(path)
    out = Path(cfg.output_dir or f"runs/eval/{cfg.protocol}-{cfg.preset}-{sha[:12] or PIXELS}")
    run = EvalRun(cfg, out, device, autocast_dtype(cfg.amp, device), info, sha, started)
    if run.records_path.exists() or (out / CHECKPOINT).exists():  # a folder of a started run
        check_rerun(out / "config.json", cfg.to_dict(), "choose another --output-dir or remove that folder")
    return run, finished_records(run)


def finished_records(run: EvalRun) -> list[Record]:
    """The records in the output folder made by this config from this checkpoint."""
    return records.finished_records(run.records_path, run.cfg.to_dict(), run.checkpoint_sha256, run.cfg.protocol)


def write_run_records(run: EvalRun, backbone_config: dict | None, arch: str, metrics: dict[str, float],
                  wall_time_s: float, extra: dict) -> list[Record]:
    """Append one record per metric (values in percent) to ``OUTPUT_DIR/records.jsonl`` and print them.

    The pre-training settings that make ablation variants (:func:`emae.records.variant_settings`) go into
    ``extra`` so that the report tells them apart. The raw-pixel baseline is method ``pixels``, 0 pre-training epochs
    on no data.
    """
    cfg = run.cfg
    if cfg.checkpoint == PIXELS:
        overrides = {"method": PIXELS, "pretrain_epochs": 0, "pretrain_data": "none"}
    else:
        overrides = {"method": cfg.method or None, "pretrain_epochs": cfg.pretrain_epochs or None,
                     "pretrain_data": cfg.pretrain_data or None}
    details = dict(extra, output_dir=str(run.out), **variant_settings(backbone_config))
    base = dict(backbone_fields(backbone_config, arch, overrides), protocol=cfg.protocol, dataset=cfg.eval_name,
                seed=cfg.seed, extra=details,
                **provenance(cfg.to_dict(), None if cfg.checkpoint == PIXELS else cfg.checkpoint, wall_time_s))
    run.open_folder()
    return write_records(run.records_path, [Record(metric=metric, value=float(value), **base)
                                            for metric, value in metrics.items()])


@dataclass
class EvalSplits:
    """The three disjoint splits of an evaluation: ``train`` (what is trained or voted with), ``val`` (held out
    from training: every choice is made on it) and ``test`` (the reported split, evaluated once with the chosen
    setting); their names for the records (``val_name``, e.g. ``fashion-mnist train[50000:60000]``, and
    ``test_name``, the config's ``eval_name``). Where ``val`` is carved from the training images, ``train`` and
    ``val`` are :class:`torch.utils.data.Subset` s of the same images, with disjoint ``indices``."""

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    val_name: str
    test_name: str


def selection(splits: EvalSplits, selected: dict, val_top1: float) -> dict:
    """What a record says of its choice: the setting ``selected`` (e.g. ``{"k": 20}``), the split it was chosen
    on and its top-1 (percent) there, and the split the record's metrics report (evaluated once, with it)."""
    return {"selected_on": splits.val_name, "reported_on": splits.test_name, "selected": selected,
            "val_top1": val_top1}


def few_shot_summary(draws: list[dict]) -> dict:
    """The record's entry of one few-shot setting: the mean and sample standard deviation (0 for one draw) of its
    draws' test ``top1`` and the draws themselves."""
    values = torch.tensor([draw["top1"] for draw in draws], dtype=torch.float64)
    return {"mean": values.mean().item(), "std": values.std().item() if len(values) > 1 else 0.0, "draws": draws}


def eval_datasets(cfg: EvalConfig, train_transform, eval_transform, in_chans: int) -> EvalSplits:
    """The config's three splits as images of ``in_chans`` channels: the training images through
    ``train_transform``, the validation and test images through ``eval_transform``.

    The validation split is held out of the training images, deterministically: for Fashion-MNIST the last
    ``val_size`` of the 60k training images; for class folders the folder ``DATA/VAL_SPLIT`` when ``val_split`` is
    set, else the last ``val_fraction`` (at least one image) of each class's images of ``DATA/TRAIN_SPLIT`` in
    their sorted order. ``train_limit`` takes the first images of what is left, and a limit that would reach
    into the validation split is an error; ``val_limit`` and ``test_limit`` take the first images of theirs.
    """
    if cfg.dataset not in ("fashion-mnist", "imagefolder"):
        raise EmaeError(f"evaluation data must be fashion-mnist or imagefolder, got {cfg.dataset!r}")
    if cfg.dataset == "fashion-mnist" and in_chans == 3:  # grey images for an RGB encoder
        train_transform, eval_transform = _to_rgb(train_transform), _to_rgb(eval_transform)
    if cfg.dataset == "fashion-mnist":
        train_root = test_root = cfg.data
    else:
        train_root, test_root = str(Path(cfg.data) / cfg.train_split), str(Path(cfg.data) / cfg.test_split)
    train_base = build_dataset(cfg.dataset, train_root, True, train_transform, in_chans)
    if cfg.dataset == "imagefolder" and cfg.val_split:
        val_root = str(Path(cfg.data) / cfg.val_split)
        val = build_dataset(cfg.dataset, val_root, True, eval_transform, in_chans)
        train_indices, val_name = list(range(len(train_base))), val_root
        _same_classes(train_base, val, train_root, val_root)
    else:
        train_indices, val_indices, val_name = _held_out(cfg, train_base, train_root)
        val = Subset(build_dataset(cfg.dataset, train_root, True, eval_transform, in_chans), val_indices)
    if cfg.train_limit > len(train_indices):
        raise EmaeError(f"train_limit {cfg.train_limit} would overlap the validation split {val_name}: "
                        f"{train_root} has {len(train_indices)} training images besides it")
    train = Subset(train_base, train_indices[:cfg.train_limit or len(train_indices)])
    test = build_dataset(cfg.dataset, test_root, False, eval_transform, in_chans)
    _same_classes(train_base, test, train_root, test_root)
    val, test = (_first(dataset, limit) for dataset, limit in ((val, cfg.val_limit), (test, cfg.test_limit)))
    return EvalSplits(train, val, test, len(train_base.classes), val_name, cfg.eval_name)


def _held_out(cfg: EvalConfig, dataset: Dataset, root: str) -> tuple[list[int], list[int], str]:
    """(training indices, validation indices, the validation split's name) of a validation split carved from
    ``dataset``, the training images at ``root``."""
    if cfg.dataset == "fashion-mnist":
        if not 0 < cfg.val_size < len(dataset):
            raise EmaeError(f"val_size must leave training images: {root} has {len(dataset)}, got {cfg.val_size}")
        cut = len(dataset) - cfg.val_size
        return list(range(cut)), list(range(cut, len(dataset))), f"{cfg.dataset} train[{cut}:{len(dataset)}]"
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(dataset.targets):
        by_class.setdefault(label, []).append(index)
    train, val = [], []
    for label, indices in sorted(by_class.items()):
        held = max(1, round(cfg.val_fraction * len(indices)))
        if held >= len(indices):
            raise EmaeError(f"{root}: class {dataset.classes[label]!r} has {len(indices)} images, too few to hold "
                            f"out val_fraction {cfg.val_fraction} of them and keep one to train on")
        train += indices[:-held]
        val += indices[-held:]
    return sorted(train), sorted(val), f"{root}: last {cfg.val_fraction:g} of each class"


def _same_classes(train: Dataset, other: Dataset, train_root: str, root: str) -> None:
    if list(other.classes) != list(train.classes):
        raise EmaeError(f"{root}: classes {list(other.classes)[:5]}... differ from the training split's "
                        f"({train_root}: {len(train.classes)} classes {list(train.classes)[:5]}...)")


def _first(dataset: Dataset, limit: int) -> Dataset:
    """The first ``limit`` items of ``dataset`` (0: all)."""
    return Subset(dataset, range(limit)) if 0 < limit < len(dataset) else dataset


def _to_rgb(transform):
    return transforms.Compose([methodcaller("convert", "RGB"), transform])


def load_own_checkpoint(path: Path, run: EvalRun) -> dict | None:
    """The training state an earlier run of this evaluation left in its output folder, if any.

    A state made from another checkpoint or another config is an error, never silently continued.
    """
    if not path.exists():
        return None
    state = load_checkpoint(path)
    if state.get("backbone_sha256") != run.checkpoint_sha256:
        raise EmaeError(f"{path} continues an evaluation of another checkpoint (sha256 "
                        f"{str(state.get('backbone_sha256'))[:12]}..., not {run.checkpoint_sha256[:12]}...); "
                        f"choose another --output-dir")
    if changed_fields(state.get("config", {}), run.cfg.to_dict()):
        raise EmaeError(f"{path} was made with another config; choose another --output-dir")
    return state
