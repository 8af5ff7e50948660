"""Backbone pieces the configs add to detectron2's: a multi-scale ViT for FPN, and a movable top block.

- :class:`ViTPyramid` is the bottom-up network of the "benchmarking" setting (Li et al. 2021, "Benchmarking
  Detection Transfer Learning with Vision Transformers"): detectron2's plain ``ViT`` split into four equal
  subsets of blocks; the output of each subset's last block is resampled (transposed convolutions up,
  max-pooling down) to strides 4, 8, 16 and 32, and detectron2's ``FPN`` is built on these maps.
- :func:`last_level_max_pool` is detectron2's ``LastLevelMaxPool`` (the extra pyramid level made by
  subsampling) reading a level other than ``p5``: the tiny presets, whose ViT has stride 4, stop at ``p3``.
"""
from __future__ import annotations

import math
from typing import Sequence

from detectron2.layers import get_norm
from detectron2.modeling import Backbone, ViT
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.backbone.utils import get_abs_pos
from torch import Tensor, nn


def last_level_max_pool(in_feature: str) -> LastLevelMaxPool:
    """``LastLevelMaxPool`` applied to the pyramid level ``in_feature`` (e.g. ``p3``)."""
    block = LastLevelMaxPool()
    block.in_feature = in_feature
    return block


def _resample(scale: float, dim: int, norm: str) -> nn.Module:
    """Up-sample by 4 or 2 with stride-2 transposed convolutions, keep, or halve with max-pooling."""
    if scale == 4.0:
        return nn.Sequential(nn.ConvTranspose2d(dim, dim, 2, stride=2), get_norm(norm, dim), nn.GELU(),
                             nn.ConvTranspose2d(dim, dim, 2, stride=2))
    if scale == 2.0:
        return nn.ConvTranspose2d(dim, dim, 2, stride=2)
    if scale == 1.0:
        return nn.Identity()
    if scale == 0.5:
        return nn.MaxPool2d(2, stride=2)
    raise ValueError(f"scale factor {scale} is not one of 4, 2, 1, 0.5")


class ViTPyramid(Backbone):
    """Multi-scale features from intermediate blocks of a plain ViT.

    Args:
        net: detectron2's ``ViT``; its weights keep their names under ``net.``.
        out_blocks: the (0-based) blocks whose outputs are used, e.g. ``(2, 5, 8, 11)`` for ViT-B.
        scale_factors: the resampling of each output relative to the ViT's stride (the patch size), e.g.
            ``(4, 2, 1, 0.5)`` for strides 4, 8, 16, 32 with 16-px patches.
        norm: the normalisation between the two transposed convolutions of a 4x up-sampling.

    Output features are named ``s<k>`` for stride ``2**k`` (``s2`` … ``s5``), each ``embed_dim`` wide.
    """

    def __init__(self, net: ViT, out_blocks: Sequence[int], scale_factors: Sequence[float], norm: str = "LN"):
        super().__init__()
        if len(out_blocks) != len(scale_factors):
            raise ValueError(f"{len(out_blocks)} out_blocks but {len(scale_factors)} scale_factors")
        if list(out_blocks) != sorted(set(out_blocks)) or not all(0 <= b < len(net.blocks) for b in out_blocks):
            raise ValueError(f"out_blocks {list(out_blocks)} must be increasing indexes of the ViT's "
                             f"{len(net.blocks)} blocks")
        self.net = net
        shape = next(iter(net.output_shape().values()))
        strides = [int(shape.stride / s) for s in scale_factors]
        self.out_blocks = list(out_blocks)
        self.resamplers = nn.ModuleList(_resample(s, shape.channels, norm) for s in scale_factors)
        self._out_features = [f"s{int(math.log2(s))}" for s in strides]
        self._out_feature_strides = dict(zip(self._out_features, strides))
        self._out_feature_channels = {name: shape.channels for name in self._out_features}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """(B, C, H, W) images -> {``s<k>``: (B, D, H / 2**k, W / 2**k)}."""
        net = self.net
        x = net.patch_embed(x)
        if net.pos_embed is not None:
            x = x + get_abs_pos(net.pos_embed, net.pretrain_use_cls_token, (x.shape[1], x.shape[2]))
        taps = []
        for i, block in enumerate(net.blocks):
            x = block(x)
            if i in self.out_blocks:
                taps.append(x.permute(0, 3, 1, 2))
        return {name: resample(tap) for name, resample, tap in zip(self._out_features, self.resamplers, taps)}
