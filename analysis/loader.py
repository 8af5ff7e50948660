"""Loading a pre-trained MAE / EMAE model with its decoder, and what the decoder analyses share.

``emae visualize`` (Figures 1 and 4), ``emae eval consistency`` (Figure 3, Table XVI) and ``emae eval
reconstruction`` (Tables XV and XVI) read checkpoints through :func:`load_mae_model` (the shape and the
architecture name from :func:`emae.checkpoint.read_weights`, the same reader as every protocol), their
evaluation images through :func:`eval_dataset`, and label their records with :func:`record_base`.

Their settings are config dataclasses, :class:`AnalysisConfig` and a subclass per command, resolved as every
command's config is (:mod:`emae.settings`), without presets: defaults < ``--config`` file (YAML or JSON) <
explicit flags. The resolved config is saved as ``config.json`` beside the command's output, and ``--config``
reads it back.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Iterable, Iterator

from torch import Tensor
from torch.utils.data import DataLoader, Subset

from emae import settings
from emae.checkpoint import load_mae_state, read_weights
from emae.data import FASHION_MNIST_DIR, IMAGENET_MEAN, IMAGENET_STD, build_dataset, eval_transform
from emae.errors import EmaeError
from emae.models import ARCHS, MaskedAutoencoderViT, build_model
from emae.reconstruct import UNNORM_STATS
from emae.records import RECORDS_FILE, Record, backbone_fields, read_records, write_records


@dataclass
class LoadedMAE:
    """A pre-trained encoder-decoder and what is needed to feed it images and read its predictions."""

    model: MaskedAutoencoderViT
    arch: str  # a registered architecture name, or a description of the shape for an unknown one
    img_size: int
    in_chans: int
    norm_pix: bool  # whether the decoder predicts per-patch normalised pixels
    mean: tuple[float, ...]  # the input normalisation the model was pre-trained with
    std: tuple[float, ...]
    config: dict | None  # our pre-training config; None for an official MAE checkpoint
    path: str
    name: str = ""  # a short label (the method for ours, the file stem otherwise)
    notes: list[str] = field(default_factory=list)  # assumptions made while loading (printed by the commands)


def load_mae_model(path: str | os.PathLike, num_heads: int | None = None, decoder_num_heads: int | None = None,
                   norm_pix: bool | None = None, mean: Iterable[float] | None = None,
                   std: Iterable[float] | None = None) -> LoadedMAE:
    """Build the ``MaskedAutoencoderViT`` a checkpoint holds, decoder included, and load it strictly.

    Our pre-training checkpoints carry their config (architecture, image size, ``norm_pix_loss``, mean and
    std). For an official MAE checkpoint (``{"model": state}`` with the decoder) the shape is read from the
    weights (:func:`emae.checkpoint.read_weights`); attention heads cannot be: ``num_heads`` defaults to the
    usual 64-d heads of the width and ``decoder_num_heads`` to 32-d heads (16 for MAE's 512-d decoder). The
    default ``norm_pix`` is True (MAE's released ``*_full.pth`` weights were trained with ``norm_pix_loss``;
    its ``mae_visualize_*`` weights were not: pass False for those) and mean/std are ImageNet's. Explicit
    ``norm_pix``, mean and std override our config too.
    """
    weights = read_weights(path, num_heads=num_heads, decoder_num_heads=decoder_num_heads)
    config, info, decoder = weights.config, weights.info, weights.shape.decoder
    if decoder is None:
        missing = sorted(k for k in ("decoder_embed.weight", "decoder_pred.weight") if k not in weights.state)
        raise EmaeError(f"{path}: the checkpoint has no decoder (missing {missing}); reconstructions need an "
                        f"MAE checkpoint with its decoder, e.g. MAE's *_full.pth or one of our pretrain "
                        f"checkpoints, not an encoder-only export")
    notes: list[str] = []
    if config and config.get("arch") in ARCHS:
        model = build_model(config["arch"], info.img_size, info.in_chans)
    else:
        if weights.format == "mae":  # a bare state dict: its heads are not stated anywhere
            if num_heads is None:
                notes.append(f"assumed {info.num_heads} encoder heads (64-d heads)")
            if decoder_num_heads is None:
                notes.append(f"assumed {decoder.num_heads} decoder heads (32-d heads)")
        model = MaskedAutoencoderViT(**weights.shape.model_kwargs())
    missing = load_mae_state(model, weights.state, path)
    if missing:
        shown = missing[:6] + (["..."] if len(missing) > 6 else [])
        raise EmaeError(f"{path}: the checkpoint has no decoder (missing {shown}); reconstructions need an MAE "
                        f"checkpoint with its decoder")
    model.eval()
    if norm_pix is None:
        norm_pix = bool(config.get("norm_pix_loss", True)) if config else True
        if not config:
            notes.append("assumed norm_pix_loss=True (pass --norm-pix false for MAE's visualisation weights)")
    if mean is None or std is None:
        if config and "mean" in config:
            mean, std = config["mean"], config["std"]
        else:
            mean, std = (IMAGENET_MEAN, IMAGENET_STD) if info.in_chans == 3 else ((0.5,) * info.in_chans,) * 2
            notes.append(f"assumed input mean {tuple(mean)} and std {tuple(std)}")
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    if len(mean) != info.in_chans or len(std) != info.in_chans:
        raise EmaeError(f"{path}: mean/std need {info.in_chans} values, got {mean} / {std}")
    label = config.get("method", "") if config else ""
    return LoadedMAE(model, weights.arch, info.img_size, info.in_chans, norm_pix, mean, std, config, str(path),
                     label or Path(path).stem, notes)


def batches(dataset, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """(images, labels) batches of a map-style dataset in index order, single process (small evaluations)."""
    yield from DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)


# ---------------------------------------------------------------------------------------------------------
# what the three analysis commands share: their config, evaluation data, record fields


NORM_PIX = {"auto": None, "true": True, "false": False}
DATASETS = ("fashion-mnist", "imagefolder", "images")
# the --help of the masking settings; a command's help_for takes them all (flags are made for its fields only)
MASK_HELP = {
    "mask_ratio": "the masks' ratio (default 0.75)",
    "seed": "seed of the masks' generator (default 0)",
    "unnorm": f"one of {', '.join(UNNORM_STATS)}: statistics that un-normalise norm-pix predictions: the "
              f"visible patches' (default) or each masked patch's own, which leak (see emae.reconstruct)",
}


@dataclass
class AnalysisConfig(settings.CommandConfig):
    """The settings every decoder analysis has: the checkpoints, what completes an official MAE checkpoint's
    description, and the evaluation images. A subclass per command adds its own and may change defaults.

    ``None`` means "the checkpoint's": its config's normalisation and data, else the defaults of
    :func:`load_mae_model` and :func:`data_source`.
    """

    help_for: ClassVar[dict[str, str]] = {
        "checkpoint": "pre-training checkpoint(s) with the decoder: ours, or official MAE ({'model': ...})",
        "names": "a label per checkpoint (default: the method in its config, else the file name)",
        "num_heads": "encoder heads of an official checkpoint (default: 64-d heads)",
        "decoder_num_heads": "decoder heads of an official checkpoint (default: 32-d heads, 16 for MAE's decoder)",
        "norm_pix": "auto, true or false: whether the decoder predicts per-patch normalised pixels (auto: the "
                    "checkpoint's config, else true)",
        "mean": "input normalisation mean (default: the checkpoint's config, else ImageNet's)",
        "std": "input normalisation std",
        "device": "auto, cpu or cuda",
        "dataset": f"kind of data, one of {', '.join(DATASETS)} (default: the checkpoint's pre-training data kind, "
                   f"else imagefolder)",
        "data": "data folder: Fashion-MNIST's idx files, or the split folder itself (e.g. imagenet/val) for "
                "imagefolder and images (default: the checkpoint's)",
        "dataset_name": "the data's name in the records (default: 'fashion-mnist test' or the folder name)",
        "crop_ratio": "resize to img_size / ratio, then centre-crop (default 1.0: the whole image, as MAE's demo)",
        "batch_size": "images per forward pass (default 64)",
    }
    # model
    checkpoint: tuple[str, ...] = ()
    names: tuple[str, ...] | None = None
    num_heads: int | None = None
    decoder_num_heads: int | None = None
    norm_pix: str = "auto"  # auto, true, false
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    device: str = "auto"  # auto, cpu, cuda
    # data
    dataset: str | None = None  # fashion-mnist, imagefolder, images
    data: str | None = None
    dataset_name: str | None = None
    num_images: int = 1000  # the first N images (0: all)
    crop_ratio: float | None = None  # None: 1.0, and so in the records
    batch_size: int = 64

    @classmethod
    def flag_help(cls) -> dict[str, str]:
        """The ``--help`` text of each flag, the number of images with this command's default."""
        return dict(cls.help_for, num_images=f"evaluate the first N images (0: all; default {cls.num_images})")

    def validate(self):
        """Check what the fields' types do not: required values, choices, one label per checkpoint; returns self."""
        if not self.checkpoint:
            raise EmaeError("--checkpoint is required")
        if self.names and len(self.names) != len(self.checkpoint):
            raise EmaeError(f"--names has {len(self.names)} labels ({' '.join(self.names)}) for "
                            f"{len(self.checkpoint)} checkpoints")
        check_choice("norm_pix", self.norm_pix, tuple(NORM_PIX))
        if self.dataset is not None:
            check_choice("dataset", self.dataset, DATASETS)
        return self


@dataclass
class RecordedAnalysisConfig(AnalysisConfig):
    """An analysis that writes records: where, and the records' backbone fields for a checkpoint without our
    pre-training config (``None``: the config's, else :func:`emae.records.backbone_fields`' defaults)."""

    help_for = dict(AnalysisConfig.help_for, **{
        "output_dir": "records.jsonl and config.json are written here (required)",
        "method": "the pre-training method in the records (default: the checkpoint's config, else mae)",
        "pretrain_epochs": "pre-training epochs in the records (default: the config's, else -1)",
        "pretrain_data": "pre-training data in the records",
    })
    output_dir: str = ""
    method: str | None = None
    pretrain_epochs: int | None = None
    pretrain_data: str | None = None

    def validate(self):
        super().validate()
        if not self.output_dir:
            raise EmaeError("--output-dir is required")
        return self


def check_choice(name: str, value, choices: tuple) -> None:
    """An error naming the setting, its value and the choices unless ``value`` is one of them."""
    if value not in choices:
        raise EmaeError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type[AnalysisConfig]) -> None:
    """``--config FILE`` and one ``--flag`` per field of ``cls``; a flag not given leaves the file's value."""
    settings.add_arguments(parser, cls, cls.flag_help())


def load_models(cfg: AnalysisConfig) -> list[LoadedMAE]:
    """Every checkpoint of the config, labelled by its ``names``; all must take the same input."""
    models = []
    for i, path in enumerate(cfg.checkpoint):
        loaded = load_mae_model(path, cfg.num_heads, cfg.decoder_num_heads, NORM_PIX[cfg.norm_pix], cfg.mean, cfg.std)
        if cfg.names:
            loaded.name = cfg.names[i]
        models.append(loaded)
    shapes = {(m.img_size, m.in_chans) for m in models}
    if len(shapes) > 1:
        raise EmaeError(f"the checkpoints take different inputs (image size, channels): {sorted(shapes)}")
    return models


def data_source(cfg: AnalysisConfig, loaded: LoadedMAE) -> tuple[str, str, str]:
    """(kind, folder, name in records) of the evaluation images, defaulting to the checkpoint's data."""
    config = loaded.config or {}
    kind = cfg.dataset or config.get("dataset") or "imagefolder"
    data = cfg.data or (config.get("data") if config.get("dataset") == kind else None)
    if kind == "fashion-mnist" and data is None:
        data = FASHION_MNIST_DIR
    if data is None:
        raise EmaeError("--data is needed: the folder of evaluation images")
    name = cfg.dataset_name or ("fashion-mnist test" if kind == "fashion-mnist" else Path(data).name)
    return kind, data, name


def image_transform(cfg: AnalysisConfig, loaded: LoadedMAE):
    """The preprocessing of an evaluation image for the model: resize, centre crop, normalise."""
    crop_ratio = cfg.crop_ratio if cfg.crop_ratio is not None else 1.0
    return eval_transform(loaded.img_size, loaded.mean, loaded.std, crop_ratio)


def eval_dataset(cfg: AnalysisConfig, loaded: LoadedMAE):
    """The first ``num_images`` evaluation images, preprocessed for the model: Fashion-MNIST's test split, or
    evenly spaced images of a folder."""
    kind, data, _ = data_source(cfg, loaded)
    transform = image_transform(cfg, loaded)
    if kind == "fashion-mnist":  # its test split is in no class order: the first N are a fair sample
        return build_dataset(kind, data, False, transform, loaded.in_chans, cfg.num_images)
    dataset = build_dataset(kind, data, False, transform, loaded.in_chans)
    return spread_subset(dataset, cfg.num_images)


def each_model(cfg: AnalysisConfig, models: list[LoadedMAE]):
    """Yield (model, its evaluation images, the images' name in records), printing each model's load notes."""
    for loaded in models:
        for note in loaded.notes:
            print(f"{loaded.path}: {note}")
        yield loaded, eval_dataset(cfg, loaded), data_source(cfg, loaded)[2]


def spread_subset(dataset, count: int):
    """``count`` evenly spaced items of a dataset (a class-sorted folder gets every class), or all of it."""
    if not count or count >= len(dataset):
        return dataset
    return Subset(dataset, [int(i * len(dataset) / count) for i in range(count)])


def record_base(loaded: LoadedMAE, cfg: RecordedAnalysisConfig, eval_settings: dict) -> tuple[dict, dict]:
    """(backbone fields of a record, its config): our pre-training config with the evaluation's settings
    under ``eval``, so that the report tells variants (K, mask ratio) apart by the pre-training values."""
    fields = backbone_fields(loaded.config, loaded.arch, {"method": cfg.method, "pretrain_epochs": cfg.pretrain_epochs,
                                                          "pretrain_data": cfg.pretrain_data})
    config = dict(loaded.config or {})
    config["eval"] = dict(eval_settings, checkpoint=loaded.path, norm_pix=loaded.norm_pix, mean=list(loaded.mean),
                          std=list(loaded.std))
    return fields, config


def records_path(cfg: RecordedAnalysisConfig) -> Path:
    """``OUTPUT_DIR/records.jsonl``, whose existing records must be readable: a damaged file is an error
    before the work, not after it."""
    path = Path(cfg.output_dir) / RECORDS_FILE
    if path.exists():
        read_records(path)
    return path


def write_outputs(cfg: RecordedAnalysisConfig, records_file: Path, records: list[Record]) -> None:
    """Append the run's records to ``records_file`` and save its config beside them (the last run's, where
    several write to one folder; each record holds its own settings too). Called once the work is done, so
    that a run stopped by bad input writes nothing."""
    write_records(records_file, records, echo=False)
    cfg.save(records_file.parent)
    print(f"wrote {len(records)} records to {records_file}")
