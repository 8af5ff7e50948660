"""ViTDet, Cascade Mask R-CNN, ViT-B/16 on COCO: the Mask R-CNN recipe with three cascade box stages."""
from ._common import use_cascade_heads
from .vitdet_mask_rcnn_vit_b import benchmark, dataloader, lr_multiplier, model, optimizer, train

use_cascade_heads(model.roi_heads)
benchmark.protocol = "vitdet-cascade-mask-rcnn"
