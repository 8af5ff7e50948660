"""The backbone hand-off: a pre-training checkpoint into a detectron2 model, with a load report.

``emae eval detect`` accepts our pre-training checkpoint, an official MAE or timm checkpoint (converted
here with ``emae export --to detectron2``'s conversion) or a ``.pth`` file that ``emae export --to
detectron2`` wrote. detectron2's ``DetectionCheckpointer`` loads it; :class:`SafeCheckpointer` only
reads files without executing code, records what the load did not match, and re-roots the export's
``backbone.net.`` prefix where a model keeps its ViT elsewhere (ViT-FPN: ``backbone.bottom_up.net.``).
A load that leaves any encoder weight behind, or meets a weight of another shape, is an error: only the
relative-position tables and everything outside the ViT may start untrained.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import ViT
from fvcore.common.checkpoint import _IncompatibleKeys
from torch import nn

from emae.checkpoint import EncoderInfo, Weights, load_checkpoint, read_weights
from emae.errors import EmaeError
from emae.export import export_weights
from emae.export.detectron2 import PREFIX
from emae.formats import weights_file

TARGET = "detectron2"
BACKBONE_FILE = "backbone_detectron2.pth"  # a checkpoint's conversion, in the run's output folder
UNTRAINED_IN_VIT = ("attn.rel_pos_h", "attn.rel_pos_w")  # ViT weights that pre-training does not have


@dataclass(frozen=True)
class Backbone:
    """A detectron2 weights file and what it holds."""

    path: Path
    info: EncoderInfo
    pretrain_config: dict | None  # our pre-training config (None for official MAE / timm checkpoints)
    arch: str  # the encoder's architecture name in the records (emae.checkpoint.EncoderInfo.arch_name)
    weights: Weights | None = None  # the checkpoint read, while its conversion is still to be written


def read_backbone(checkpoint: str | os.PathLike, out_dir: str | os.PathLike) -> Backbone:
    """Read ``checkpoint`` once: a file ``DetectionCheckpointer`` loads as it is when ``emae export --to
    detectron2`` wrote it as ``.pth``, else any checkpoint :func:`emae.checkpoint.read_weights` reads, whose
    conversion goes to ``out_dir/backbone_detectron2.pth`` (:func:`write_backbone`). Nothing is written."""
    checkpoint = Path(checkpoint)
    obj = load_checkpoint(weights_file(checkpoint))
    if obj.get("target") == TARGET:
        if checkpoint.suffix == ".safetensors":
            raise EmaeError(f"{checkpoint}: a detectron2 export as safetensors, which detectron2 does not read; "
                            f"pass the .pth export or the pre-training checkpoint")
        info, config = EncoderInfo(**obj["encoder"]), obj.get("config")
        return Backbone(checkpoint, info, config, info.arch_name(config))
    weights = read_weights(checkpoint)
    return Backbone(Path(out_dir) / BACKBONE_FILE, weights.info, weights.config, weights.arch, weights)


def write_backbone(backbone: Backbone) -> Backbone:
    """Write the conversion :func:`read_backbone` planned (nothing to do for an export); the file to load."""
    if backbone.weights is None:
        return backbone
    export_weights(backbone.weights, backbone.path, TARGET)
    return dataclasses.replace(backbone, weights=None)


def prepare_backbone(checkpoint: str | os.PathLike, out_dir: str | os.PathLike) -> Backbone:
    """:func:`read_backbone` then :func:`write_backbone`."""
    return write_backbone(read_backbone(checkpoint, out_dir))


def vit_prefix(model: nn.Module) -> str:
    """Where the model keeps its detectron2 ``ViT``, as a state-dict prefix (e.g. ``backbone.net.``)."""
    names = [name for name, module in model.named_modules() if isinstance(module, ViT)]
    if len(names) != 1:
        raise EmaeError(f"expected one detectron2 ViT in the model, found {len(names)}: {names}")
    return names[0] + "."


class SafeCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` that reads with ``torch.load(weights_only=True)`` and keeps the load report.

    After :meth:`load`, ``report`` holds the last load's missing / unexpected keys and shape mismatches.
    """

    def __init__(self, model: nn.Module, save_dir: str = "", **checkpointables):
        super().__init__(model, save_dir, **checkpointables)
        self.report: _IncompatibleKeys | None = None

    def _load_file(self, filename: str) -> dict:
        if filename.endswith((".pkl", ".pyth")):
            raise EmaeError(f"{filename}: refused: pickle files can run code when loaded; convert the weights "
                            f"to a .pth state dict in a trusted session")
        return super()._load_file(filename)

    def _torch_load(self, filename: str) -> dict:
        return load_checkpoint(filename)

    def _load_model(self, checkpoint: dict) -> _IncompatibleKeys:
        prefix = vit_prefix(self.model)
        if prefix != PREFIX:
            checkpoint["model"] = {prefix + k[len(PREFIX):] if k.startswith(PREFIX) else k: v
                                   for k, v in checkpoint["model"].items()}
        self.report = super()._load_model(checkpoint)
        return self.report


def load_backbone(checkpointer: SafeCheckpointer, backbone: Backbone) -> dict:
    """Load the backbone weights into the checkpointer's model; returns the report, or raises on a mismatch.

    The report: ``loaded`` (the number of tensors), ``missing_in_vit`` (the ViT's untrained tables), and
    ``missing_outside_vit`` (how many weights of the detector start from scratch).
    """
    checkpointer.load(str(backbone.path), checkpointables=[])
    report = checkpointer.report
    prefix = vit_prefix(checkpointer.model)  # fvcore's checkpointer holds the model without its DDP wrapper
    where = str(backbone.path)
    if report.incorrect_shapes:
        key, ckpt_shape, model_shape = report.incorrect_shapes[0]
        raise EmaeError(f"{where}: '{key}' has shape {tuple(ckpt_shape)} in the checkpoint but "
                        f"{tuple(model_shape)} in the model ({len(report.incorrect_shapes)} such weights): "
                        f"the checkpoint is a {backbone.info.embed_dim}-d, {backbone.info.depth}-block ViT "
                        f"with {backbone.info.patch_size}-px patches; choose the config of that size")
    if report.unexpected_keys:
        raise EmaeError(f"{where}: {len(report.unexpected_keys)} weights have no place in the model, e.g. "
                        f"{sorted(report.unexpected_keys)[:3]} (a deeper ViT than the config's?)")
    in_vit = sorted(k for k in report.missing_keys if k.startswith(prefix))
    not_pretrained = [k for k in in_vit if not k.endswith(UNTRAINED_IN_VIT)]
    if not_pretrained:
        raise EmaeError(f"{where}: {len(not_pretrained)} ViT weights are not in the checkpoint, e.g. "
                        f"{not_pretrained[:3]} (a shallower ViT than the config's?)")
    vit_keys = [k for k in checkpointer.model.state_dict() if k.startswith(prefix)]
    return {"file": where, "loaded": len(vit_keys) - len(in_vit), "missing_in_vit": in_vit,
            "missing_outside_vit": len(report.missing_keys) - len(in_vit)}
