"""ViTDet, Cascade Mask R-CNN, ViT-L/16 on COCO."""
from ._common import use_vit_large
from .vitdet_cascade_mask_rcnn_vit_b import benchmark, dataloader, lr_multiplier, model, optimizer, train

use_vit_large(model.backbone.net, optimizer)
