"""ViTDet, Mask R-CNN, ViT-B/16 on COCO (the paper's Table IV; detectron2's ViTDet recipe).

Plain ViT-B with window attention (14x14) and four global blocks (2, 5, 8, 11), relative positions,
drop path 0.1; SimpleFeaturePyramid (strides 4-64) with LN; RPN with two convolutions, 4conv1fc box head.
1024 px, large-scale jitter 0.1-2.0, batch 64, AdamW (lr 1e-4, weight decay 0.1), layer decay 0.7,
100 epochs (184375 iterations) with lr x0.1 at 163889 and 177546, 250 warm-up iterations, AMP on GPU.
"""
from fvcore.common.param_scheduler import MultiStepParamScheduler

from detectron2 import model_zoo
from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler

from ._common import VIT_B_WINDOW_BLOCKS, lsj_dataloader, vit_layer_decay

# ViT-B + SimpleFeaturePyramid + LN heads, as detectron2's common ViTDet model
model = model_zoo.get_config("common/models/mask_rcnn_vitdet.py").model
model.backbone.net.update(window_block_indexes=VIT_B_WINDOW_BLOCKS, pretrain_img_size=224)

dataloader = lsj_dataloader(image_size=1024, min_scale=0.1, max_scale=2.0, batch_size=64, image_format="RGB")

optimizer = model_zoo.get_config("common/optim.py").AdamW  # lr 1e-4, weight decay 0.1
vit_layer_decay(optimizer, depth=12, rate=0.7)

ITERS = 184375  # 100 epochs of COCO train2017 (118k images) at batch 64
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1, 0.01], milestones=[163889, 177546], num_updates=ITERS),
    warmup_length=250 / ITERS,
    warmup_factor=0.001,
)

train = model_zoo.get_config("common/train.py").train
train.update(max_iter=ITERS, device="cuda", seed=0)
train.amp.enabled = True
train.ddp.fp16_compression = True

benchmark = dict(protocol="vitdet-mask-rcnn", train_split="train2017", val_split="val2017",
                 dataset_name="COCO val2017")
