"""ViTDet Mask R-CNN at CPU scale for the ``fmnist-small`` pre-training (its ViT has 8-px patches) on the
Fashion-MNIST scenes: ``emae pipeline``'s detect stage, about 38 s on a 2-core CPU with one thread (measured in
detection/README.md).

Not a paper number: the comparison of backbones (untrained, MAE, EMAE) under one short schedule. Data: ``emae
data detection`` (96-px grey scenes, 10 categories, splits ``train`` and ``val``). Backbone:
``vit_tiny_p8_fmnist`` (8-px patches, 128-d, 4 blocks, 4 heads, 1 channel, pre-trained at 32 px: a 4x4 grid)
on a 12x12 grid, with 4x4 windows (the pre-training grid, as ViTDet's 14x14 windows are ViT-B's) in blocks 0
and 2 and global attention in 1 and 3. The simple feature pyramid keeps the tiny preset's strides 4 and 8
(scales 2 and 1 of the 8-px patches; ViTDet's 4 and 2 of 16-px ones) plus a max-pooled stride 16.

Beside ``vitdet_mask_rcnn_tiny``, whose jitter, batch, optimizer and schedule shape it keeps, it is leaner where
the time of a step went (the tiny recipe with 8-px patches took 2.7 times as long a step): the pyramid and heads
32 wide, 32 RoIs per image, RoIAlign sampling adaptively (``sampling_ratio=0``, ViTDet's own), data read in the
training process, batches of 4 at evaluation (the same inputs: every scene is padded to the same square), and
only the final checkpoint. 120 iterations at lr 1e-3 (at 150 iterations, 2e-3 and 5e-4 scored the MAE backbone
lower).
"""
from detectron2.layers import ShapeSpec

# the tiny config's nodes, changed below; LazyConfig reads them from this module
from .vitdet_mask_rcnn_tiny import benchmark, dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

PATCH = 8
PRETRAIN_GRID = 32 // PATCH  # 4x4 patches at the pre-training's 32 px
WIDTH = 32
ITERS = 120

model.backbone.net.update(patch_size=PATCH, window_size=PRETRAIN_GRID)
model.backbone.update(out_channels=WIDTH, scale_factors=(2.0, 1.0))  # strides 4, 8; the top block pools p3
model.proposal_generator.head.in_channels = WIDTH

_heads = model.roi_heads
_heads.batch_size_per_image = 32
for _pooler in (_heads.box_pooler, _heads.mask_pooler):
    _pooler.sampling_ratio = 0
_heads.box_head.update(input_shape=ShapeSpec(channels=WIDTH, height=7, width=7), conv_dims=[WIDTH] * 2)
_heads.mask_head.update(input_shape=ShapeSpec(channels=WIDTH, height=14, width=14), conv_dims=[WIDTH] * 3)

dataloader.train.num_workers = dataloader.test.num_workers = 0
dataloader.test.batch_size = 4

optimizer.lr = 1e-3

train.update(max_iter=ITERS, log_period=20)
train.checkpointer.update(period=1000, max_to_keep=1)  # a run of the pipeline's length writes only its last
