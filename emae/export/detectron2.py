"""Encoder weights for detectron2's ``ViT`` (``detectron2.modeling.backbone.vit``), as ViTDet loads them.

detectron2's ViT names its blocks like timm and MAE (``blocks.N.norm1``, ``attn.qkv``, ``attn.proj``,
``norm2``, ``mlp.fc1``, ``mlp.fc2``), so the conversion only adds the prefix ``backbone.net.`` (where
ViTDet's ``SimpleFeaturePyramid`` keeps its ViT) and leaves out what that ViT does not have:

- ``cls_token``: ViTDet runs on patch tokens only. The position embedding keeps its class-token row
  (``pretrain_use_cls_token=True``, detectron2's default), which the ViT drops before interpolating the
  patch grid to the detection image size.
- ``norm.weight`` / ``norm.bias``: ViTDet has no final LayerNorm; the feature pyramid normalises.
- a fine-tuned checkpoint's ``fc_norm`` (its ``head`` is already left out of the encoder by
  :func:`emae.checkpoint.read_weights`), as the mmseg export leaves both out.

The relative-position tables (``attn.rel_pos_h`` / ``rel_pos_w``) are not pre-trained and start at zero.

Written under ``model`` (what ``DetectionCheckpointer`` reads); the other keys of the file (``config``,
``encoder``, ``source``, ``target``) are plain values that the checkpointer returns unused.
"""
from __future__ import annotations

from torch import Tensor

from emae.checkpoint import EncoderInfo

CONTAINER = "model"
PREFIX = "backbone.net."
DROPPED = ("cls_token", "norm.weight", "norm.bias", "fc_norm.weight", "fc_norm.bias")


def convert(encoder: dict[str, Tensor], info: EncoderInfo) -> dict[str, Tensor]:
    return {PREFIX + k: v for k, v in encoder.items() if k not in DROPPED}
