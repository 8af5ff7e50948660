"""Encoder weights for timm's ``VisionTransformer``: MAE's encoder names are already timm's.

Written as a bare state dict, which ``timm.create_model(name, pretrained_cfg_overlay=dict(file=...))``
and ``checkpoint_path=`` both load. The classifier head and ``fc_norm`` are left to the evaluation.
"""
from __future__ import annotations

from torch import Tensor

from emae.checkpoint import EncoderInfo

CONTAINER = None


def convert(encoder: dict[str, Tensor], info: EncoderInfo) -> dict[str, Tensor]:
    return dict(encoder)
