"""The run's mmengine config: a named preset (``configs/*.py``) plus the data, weights and overrides of a run.

The presets inherit mmsegmentation's own configs where they can (``_base_ = "mmseg::..."``, read from the
installed package), so the ADE20K recipe is the one mmseg ships. A run changes only what
:func:`build_config` names; anything else goes through ``--cfg-options`` (mmengine's ``key=value``
syntax).
"""
from __future__ import annotations

import os
from pathlib import Path

from mmengine.config import Config, DictAction

from emae.checkpoint import NORM_EPS, EncoderInfo, check_shape
from emae.errors import EmaeError

CONFIG_DIR = Path(__file__).parent / "configs"
# ADE20K's layout (ADEChallengeData2016): image and annotation folder of each split
SPLIT_FOLDERS = {"training": ("images/training", "annotations/training"),
                 "validation": ("images/validation", "annotations/validation")}
IMAGE_SUFFIX, ANNOTATION_SUFFIX = ".jpg", ".png"


def config_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.py"))


def config_path(name: str) -> Path:
    """A preset's file by name (``upernet_tiny_fmnist``), or a config file's path."""
    if name.endswith(".py"):
        path = Path(name)
        if not path.is_file():
            raise EmaeError(f"{path}: config file not found")
        return path
    if name not in config_names():
        raise EmaeError(f"unknown segmentation config {name!r}; choose one of {config_names()} or a .py file")
    return CONFIG_DIR / f"{name}.py"


def check_data_layout(root: str | os.PathLike) -> None:
    """``root`` must hold ADE20K's four folders, and every image its annotation (``X.jpg`` -> ``X.png``)."""
    root = Path(root)
    if not root.is_dir():
        raise EmaeError(f"{root}: data folder not found")
    for images_dir, annotations_dir in SPLIT_FOLDERS.values():
        for folder in (images_dir, annotations_dir):
            if not (root / folder).is_dir():
                raise EmaeError(f"{root}: not ADE20K's layout: the folder '{folder}' is missing (expected "
                                f"{', '.join(f for pair in SPLIT_FOLDERS.values() for f in pair)})")
        stems = [p.stem for p in (root / images_dir).glob(f"*{IMAGE_SUFFIX}")]
        if not stems:
            raise EmaeError(f"{root / images_dir}: no {IMAGE_SUFFIX} images")
        unlabelled = sorted(s for s in stems if not (root / annotations_dir / f"{s}{ANNOTATION_SUFFIX}").is_file())
        if unlabelled:
            raise EmaeError(f"{root / annotations_dir}: {len(unlabelled)} image(s) of {images_dir} have no "
                            f"annotation, e.g. {unlabelled[0]}{ANNOTATION_SUFFIX}")


def build_config(name: str, data: str | os.PathLike, seed: int, iters: int = 0, batch_size: int = 0,
                 amp: bool = False, cfg_options: dict | None = None) -> Config:
    """The preset with the data root, seed and overrides applied (the weights and work dir come later)."""
    path = config_path(name)
    try:
        cfg = Config.fromfile(str(path))
    except Exception as e:  # the file is Python that mmengine runs: any error in it is the config's
        raise EmaeError(f"{path}: not a readable mmengine config: {describe(e)}") from None
    if not isinstance(cfg.get("model"), dict) or not isinstance(cfg.get("train_dataloader"), dict):
        raise EmaeError(f"{path}: not a segmentation config: it defines no model or train_dataloader")
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        if cfg.get(loader) is not None:
            cfg[loader].dataset.data_root = str(data)
    cfg.randomness = dict(seed=seed)
    if iters:
        set_iterations(cfg, iters)
    if batch_size:
        cfg.train_dataloader.batch_size = batch_size
    if amp:
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.loss_scale = "dynamic"
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def parse_cfg_options(options: tuple[str, ...] | list[str]) -> dict:
    """``KEY=VALUE`` strings as mmengine's ``--cfg-options`` (``DictAction``) reads them: the value split at the
    first ``=`` and parsed by ``DictAction`` (numbers, true/false, None, ``a,b`` and ``[a, (b, c)]`` lists);
    a later key wins. A string without ``KEY=`` or with unpaired brackets is an error naming it."""
    parsed = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise EmaeError(f"--cfg-options {option!r}: expected KEY=VALUE")
        try:
            parsed[key] = DictAction._parse_iterable(value)
        except AssertionError:  # DictAction's check that brackets pair up
            raise EmaeError(f"--cfg-options {option!r}: the value's brackets do not pair up") from None
    return parsed


def describe(error: Exception) -> str:
    """An exception raised by a config file, on one line (a syntax error with its line)."""
    if isinstance(error, SyntaxError) and error.lineno:
        return f"{error.msg} (line {error.lineno})"
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def check_encoder(cfg: Config, info: EncoderInfo, checkpoint: str | os.PathLike) -> None:
    """The checkpoint's encoder must be the ViT the config's backbone builds (:func:`emae.checkpoint.check_shape`),
    checked before anything is written."""
    backbone = cfg.model.backbone
    check_shape(info, {"patch_size": backbone.get("patch_size"), "embed_dim": backbone.get("embed_dims"),
                       "depth": backbone.get("num_layers"), "num_heads": backbone.get("num_heads"),
                       "in_chans": backbone.get("in_channels")}, checkpoint, "the config's backbone")


def set_norm_eps(cfg: Config, eps: float) -> None:
    """The backbone's LayerNorms take the checkpoint's epsilon where it is not mmseg's MAE default (1e-6): a
    Hugging Face ViT's 1e-12."""
    if eps != NORM_EPS:
        cfg.model.backbone.norm_cfg = dict(type="LN", eps=eps)


def set_iterations(cfg: Config, iters: int) -> None:
    """Train for ``iters`` iterations: the last schedule ends there, earlier ones (warm-up) end by then."""
    if iters < 1:
        raise EmaeError(f"iters must be >= 1, got {iters}")
    cfg.train_cfg.max_iters = iters
    cfg.train_cfg.val_interval = min(cfg.train_cfg.val_interval, iters)
    checkpoint = cfg.default_hooks.checkpoint
    checkpoint.interval = min(checkpoint.interval, iters)
    schedulers = cfg.param_scheduler if isinstance(cfg.param_scheduler, list) else [cfg.param_scheduler]
    for scheduler in schedulers:
        scheduler.begin = min(scheduler.get("begin", 0), iters - 1)
        scheduler.end = min(scheduler.get("end", iters), iters)
    schedulers[-1].end = iters


def attach_backbone(cfg: Config, weights: str | os.PathLike) -> None:
    """Let the backbone load ``weights`` itself (mmseg's ``Pretrained`` init)."""
    cfg.model.pretrained = None
    cfg.model.backbone.init_cfg = dict(type="Pretrained", checkpoint=str(weights))


def summary(cfg: Config) -> dict:
    """The settings a result depends on, for the records (the full config is dumped in the work dir)."""
    optimizer = cfg.optim_wrapper.optimizer
    backbone = cfg.model.backbone
    return {
        "iters": cfg.train_cfg.max_iters,
        "batch_size_per_process": cfg.train_dataloader.batch_size,
        "crop_size": list(cfg.model.data_preprocessor.size),
        "optimizer": optimizer.type,
        "lr": optimizer.lr,
        "weight_decay": optimizer.weight_decay,
        "layer_decay": _layer_decay(cfg.optim_wrapper.get("paramwise_cfg", {})),
        "optim_wrapper": cfg.optim_wrapper.type,
        "out_indices": list(backbone.out_indices),
        "drop_path_rate": backbone.drop_path_rate,
        "test_mode": cfg.model.test_cfg.mode,
        "seed": cfg.randomness.seed,
    }


def _layer_decay(paramwise_cfg: dict) -> float | None:
    """The layer decay rate: ``decay_rate`` (mmseg 1.x), or the deprecated ``layer_decay_rate`` of a user's config."""
    return paramwise_cfg.get("decay_rate", paramwise_cfg.get("layer_decay_rate"))
