"""ViTDet, Mask R-CNN, ViT-L/16 on COCO (the paper's Table V): the ViT-B recipe with ViT-L's backbone.

1024-d, 24 blocks, 16 heads, global blocks 5, 11, 17, 23, drop path 0.4, layer decay 0.8.
"""
from ._common import use_vit_large
from .vitdet_mask_rcnn_vit_b import benchmark, dataloader, lr_multiplier, model, optimizer, train

use_vit_large(model.backbone.net, optimizer)
