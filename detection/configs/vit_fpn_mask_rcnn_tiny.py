"""ViT + FPN Mask R-CNN at CPU scale: the tiny preset's data, heads and schedule on the benchmarking backbone.

The outputs of blocks 1 and 3 of the 4-block tiny ViT (strides 4 and 8, the second max-pooled) feed FPN,
whose extra level is the max-pooled stride 16.
"""
from functools import partial

from torch import nn

from detectron2.config import LazyCall as L
from detectron2.modeling import ViT
from detectron2.modeling.backbone.fpn import FPN

from detection.backbone import ViTPyramid, last_level_max_pool

from .vitdet_mask_rcnn_tiny import SIZE, WIDTH, benchmark, dataloader, lr_multiplier, model, optimizer, train

model.backbone = L(FPN)(
    bottom_up=L(ViTPyramid)(
        net=L(ViT)(img_size=SIZE, patch_size=4, in_chans=1, embed_dim=128, depth=4, num_heads=4, window_size=8,
                   window_block_indexes=[0, 2], use_rel_pos=True, pretrain_img_size=32,
                   norm_layer=partial(nn.LayerNorm, eps=1e-6)),
        out_blocks=[1, 3],
        scale_factors=(1.0, 0.5),
    ),
    in_features=["s2", "s3"],
    out_channels=WIDTH,
    norm="LN",
    top_block=L(last_level_max_pool)(in_feature="p3"),
    square_pad=SIZE,
)
benchmark.protocol = "vit-fpn-mask-rcnn"
