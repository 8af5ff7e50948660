"""``emae export``: a checkpoint's encoder in the key layout of a downstream framework.

Each target is a module of this package with ``convert(encoder, info) -> dict[str, Tensor]`` (encoder in
official MAE key names in, the framework's names out) and ``CONTAINER``: the key the framework reads the
weights under (``None`` for a bare state dict). The written ``.pth`` also holds the pre-training config
(``config``) and the encoder's shape (``encoder``) so that every downstream record can trace its
backbone; ``.safetensors`` keeps both in its metadata.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
from pathlib import Path

from torch import Tensor

from emae.checkpoint import EncoderInfo, Weights, read_weights, save_checkpoint, save_safetensors
from emae.errors import EmaeError

TARGETS = {"timm": "emae.export.timm", "detectron2": "emae.export.detectron2", "mmseg": "emae.export.mmseg"}


def convert_encoder(encoder: dict[str, Tensor], info: EncoderInfo, target: str) -> dict[str, Tensor]:
    return _target(target).convert(encoder, info)


def _target(name: str):
    if name not in TARGETS:
        raise EmaeError(f"unknown export target {name!r}; choose one of {sorted(TARGETS)}")
    return importlib.import_module(TARGETS[name])


def export_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, target: str) -> Path:
    """Convert ``src`` (our, official MAE or timm checkpoint) for ``target`` and write ``dst``.

    The format follows ``dst``'s suffix: ``.safetensors`` or a ``torch.save`` file.
    """
    _target(target)  # an unknown target is an error before the checkpoint is read
    if Path(dst).exists() and Path(dst).resolve() == Path(src).resolve():
        raise EmaeError(f"{dst}: --out is the checkpoint being exported; choose another file")
    return export_weights(read_weights(src), dst, target)


def export_weights(weights: Weights, dst: str | os.PathLike, target: str) -> Path:
    """Write ``weights`` (read once by :func:`emae.checkpoint.read_weights`) converted for ``target`` to ``dst``."""
    module = _target(target)
    tensors = module.convert(weights.encoder, weights.info)
    meta = {"config": weights.config, "encoder": dataclasses.asdict(weights.info), "source": weights.path,
            "target": target}
    dst = Path(dst)
    if dst.suffix == ".safetensors":
        save_safetensors(tensors, dst, {k: v for k, v in meta.items() if v is not None})
    else:
        obj = dict(tensors) if module.CONTAINER is None else {module.CONTAINER: tensors}
        if module.CONTAINER is not None:
            obj.update(meta)
        save_checkpoint(obj, dst)
    return dst


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="our pre-training checkpoint, an official MAE "
                        "checkpoint or a timm ViT state dict (.pth or .safetensors)")
    parser.add_argument("--to", required=True, choices=sorted(TARGETS), help="the framework to export for")
    parser.add_argument("--out", required=True, help="output file (.pth, or .safetensors)")


def main(args: argparse.Namespace) -> int:
    dst = export_checkpoint(args.checkpoint, args.out, args.to)
    print(f"wrote {dst} ({args.to})")
    return 0
