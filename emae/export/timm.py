"""Encoder weights for timm's ``VisionTransformer``: MAE's encoder names are already timm's.

Written as a bare state dict (the decoder and ``mask_token`` dropped), which timm loads either way:

- ``timm.create_model("vit_base_patch16_224", pretrained=True, num_classes=N,
  pretrained_cfg_overlay=dict(file=PATH))``: every encoder key is loaded and a new N-way head is created
  (timm loads non-strictly when the number of classes differs from the pre-trained config's 1000);
- ``timm.create_model("vit_base_patch16_224", num_classes=0, checkpoint_path=PATH)``: a strict load, so the
  model must have no head (``num_classes=0``) and the final ``norm`` (the default ``global_pool="token"``).

A ViT without a timm name of its own (our Fashion-MNIST ViT) is created from any ViT name with its shape
as arguments, e.g. ``img_size=32, patch_size=4, embed_dim=128, depth=4, num_heads=4, in_chans=1``.
``evaluation.backbone`` reads the same file and reports every key.
"""
from __future__ import annotations

from torch import Tensor

from emae.checkpoint import EncoderInfo

CONTAINER = None


def convert(encoder: dict[str, Tensor], info: EncoderInfo) -> dict[str, Tensor]:
    return dict(encoder)
