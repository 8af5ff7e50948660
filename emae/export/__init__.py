"""``emae export``: a checkpoint's encoder in the key layout of a downstream framework.

Each target is a module of this package with ``convert(encoder, info) -> dict[str, Tensor]`` (encoder in
official MAE key names in, the framework's names out) and ``CONTAINER``: the key the framework reads the
weights under (``None`` for a bare state dict). The input is any format :mod:`emae.formats` reads. The
written file also holds the pre-training config (``config``) and the encoder's whole shape (``encoder``:
patch size, width, depth, attention heads, input channels, image size, LayerNorm epsilon), which
:func:`emae.checkpoint.read_weights` reads back, so that every downstream record can trace its backbone;
``.safetensors`` keeps both in its metadata. The one exception is timm's ``.pth``, a bare state dict (what
``model.load_state_dict(torch.load(PATH))`` expects): its heads are the registered architecture's of the same
shape, else 64-d heads, else ``--num-heads`` when it is read or exported again (see :mod:`emae.export.timm`).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
from pathlib import Path

from emae.checkpoint import Weights, read_weights, save_checkpoint, save_safetensors
from emae.errors import EmaeError

TARGETS = {"timm": "emae.export.timm", "detectron2": "emae.export.detectron2", "mmseg": "emae.export.mmseg"}


def _target(name: str):
    if name not in TARGETS:
        raise EmaeError(f"unknown export target {name!r}; choose one of {sorted(TARGETS)}")
    return importlib.import_module(TARGETS[name])


def export_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, target: str,
                      num_heads: int | None = None) -> Path:
    """Convert ``src`` (a checkpoint file or Hugging Face folder of any format :mod:`emae.formats` reads) for
    ``target`` and write ``dst``; ``num_heads`` for a file that does not say (:func:`emae.checkpoint.read_weights`).

    The format follows ``dst``'s suffix: ``.safetensors`` or a ``torch.save`` file.
    """
    _target(target)  # an unknown target is an error before the checkpoint is read
    if Path(dst).exists() and Path(dst).resolve() == Path(src).resolve():
        raise EmaeError(f"{dst}: --out is the checkpoint being exported; choose another file")
    return export_weights(read_weights(src, num_heads=num_heads), dst, target)


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
                        "checkpoint, a timm ViT state dict (.pth or .safetensors), a Hugging Face ViTMAE / ViT "
                        "(a save_pretrained folder or its weights file) or an earlier timm export")
    parser.add_argument("--to", required=True, choices=sorted(TARGETS), help="the framework to export for")
    parser.add_argument("--out", required=True, help="output file (.pth, or .safetensors)")
    parser.add_argument("--num-heads", type=int, default=None, help="the encoder's attention heads, for a "
                        "checkpoint that does not say (a state dict without a config, a .pth timm export); "
                        "default: the registered architecture's of the same shape, else 64-d heads")


def main(args: argparse.Namespace) -> int:
    dst = export_checkpoint(args.checkpoint, args.out, args.to, args.num_heads)
    print(f"wrote {dst} ({args.to})")
    return 0
