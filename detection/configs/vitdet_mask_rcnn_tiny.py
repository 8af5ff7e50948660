"""ViTDet Mask R-CNN at CPU scale: the tiny ViT of ``emae pretrain`` on the Fashion-MNIST scenes.

Not a paper number: a run of minutes on a CPU that takes a pre-trained checkpoint through the whole
pipeline (hand-off, training, COCO evaluation, record). Data: ``emae data detection`` (96-px grey scenes,
10 categories, splits ``train`` and ``val``). Backbone: ``vit_tiny_fmnist`` (4-px patches, 128-d, 4 blocks,
4 heads, 1 channel, pre-trained at 32 px) with 8x8 windows (the pre-training grid) in blocks 0 and 2 and
global attention in 1 and 3; SimpleFeaturePyramid at strides 4 and 8 plus a max-pooled stride 16; 64-wide
LN heads, 64 RoIs per image, at most 20 detections per image (a scene holds at most 4 items). Jitter
0.8-1.25, batch 4, AdamW with layer decay 0.7, 300 iterations, step decay.
"""
from fvcore.common.param_scheduler import MultiStepParamScheduler

from detectron2 import model_zoo
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.solver import WarmupParamScheduler

from detection.backbone import last_level_max_pool

from ._common import lsj_dataloader, vit_layer_decay

SIZE, WIDTH = 96, 64
STRIDES = [4, 8, 16]
LEVELS = ["p2", "p3", "p4"]
MEAN, STD = 0.2860 * 255, 0.3530 * 255  # Fashion-MNIST's, as in pre-training

model = model_zoo.get_config("common/models/mask_rcnn_vitdet.py").model
model.update(pixel_mean=[MEAN], pixel_std=[STD], input_format="L")
model.backbone.net.update(img_size=SIZE, patch_size=4, in_chans=1, embed_dim=128, depth=4, num_heads=4,
                          drop_path_rate=0.0, window_size=8, window_block_indexes=[0, 2], pretrain_img_size=32)
model.backbone.update(out_channels=WIDTH, scale_factors=(1.0, 0.5), top_block=L(last_level_max_pool)(in_feature="p3"),
                      square_pad=SIZE)

_rpn = model.proposal_generator
_rpn.update(in_features=LEVELS, pre_nms_topk=(600, 300), post_nms_topk=(300, 100), batch_size_per_image=128)
_rpn.head.in_channels = WIDTH
_rpn.anchor_generator.update(sizes=[[16], [32], [64]], strides=STRIDES)

_heads = model.roi_heads
_heads.update(num_classes=10, batch_size_per_image=64, box_in_features=LEVELS, mask_in_features=LEVELS)
for _pooler in (_heads.box_pooler, _heads.mask_pooler):
    _pooler.update(scales=[1 / s for s in STRIDES], sampling_ratio=2)
_heads.box_head.update(input_shape=ShapeSpec(channels=WIDTH, height=7, width=7), conv_dims=[WIDTH] * 2,
                      fc_dims=[256])
_heads.box_predictor.update(input_shape=ShapeSpec(channels=256), test_topk_per_image=20)
_heads.mask_head.update(input_shape=ShapeSpec(channels=WIDTH, height=14, width=14), conv_dims=[WIDTH] * 3)

dataloader = lsj_dataloader(image_size=SIZE, min_scale=0.8, max_scale=1.25, batch_size=4, image_format="L")
dataloader.train.mapper.instance_mask_format = "bitmask"  # the scenes' masks are RLE
dataloader.train.num_workers = dataloader.test.num_workers = 1

optimizer = model_zoo.get_config("common/optim.py").AdamW
optimizer.lr = 3e-4
vit_layer_decay(optimizer, depth=4, rate=0.7)

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1], milestones=[270], num_updates=300),
    warmup_length=0.05,
    warmup_factor=0.001,
)

train = model_zoo.get_config("common/train.py").train
train.update(max_iter=300, device="cpu", seed=0, eval_period=0, log_period=20)
train.checkpointer.update(period=100, max_to_keep=2)

benchmark = dict(protocol="vitdet-mask-rcnn", train_split="train", val_split="val", dataset_name="fmnist-scenes val")
