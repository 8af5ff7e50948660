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
    # data
    dataset: str = "fashion-mnist"  # fashion-mnist, or imagefolder (DATA/TRAIN_SPLIT and DATA/VAL_SPLIT)
    data: str = FASHION_MNIST_DIR
    train_split: str = "train"  # imagefolder only
    val_split: str = "val"  # imagefolder only
    train_limit: int = 0  # use only the first N training images (0: all)
    val_limit: int = 0
    eval_name: str = "fashion-mnist test"  # the records' dataset field
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
    ``extra`` so that the report tells them apart. The raw-pixel baseline is method ``pixels``, 0 pre-training epochs on no data.
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


def eval_datasets(cfg: EvalConfig, train_transform, val_transform, in_chans: int) -> tuple[Dataset, Dataset, int]:
    """(train, validation, number of classes) of the config's data, as images of ``in_chans`` channels."""
    split = {"fashion-mnist": (cfg.data, cfg.data), "imagefolder": (str(Path(cfg.data) / cfg.train_split),
                                                                     str(Path(cfg.data) / cfg.val_split))}
    if cfg.dataset not in split:
        raise EmaeError(f"evaluation data must be fashion-mnist or imagefolder, got {cfg.dataset!r}")
    if cfg.dataset == "fashion-mnist" and in_chans == 3:  # grey images for an RGB encoder
        train_transform, val_transform = _to_rgb(train_transform), _to_rgb(val_transform)
    train_root, val_root = split[cfg.dataset]
    train = build_dataset(cfg.dataset, train_root, True, train_transform, in_chans, cfg.train_limit)
    val = build_dataset(cfg.dataset, val_root, False, val_transform, in_chans, cfg.val_limit)
    classes = len(_base(train).classes)
    if len(_base(val).classes) != classes:
        raise EmaeError(f"{val_root}: {len(_base(val).classes)} classes, but the training split has {classes}")
    return train, val, classes


def _base(dataset: Dataset) -> Dataset:
    return dataset.dataset if isinstance(dataset, Subset) else dataset


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
