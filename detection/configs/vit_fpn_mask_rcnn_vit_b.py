"""ViT + FPN Mask R-CNN, ViT-B/16 on COCO: the "benchmarking" setting of Li et al. 2021 (the paper's Table III).

The ViT's 12 blocks in four subsets; the outputs of blocks 2, 5, 8 and 11 (0-based), which are also the
global-attention blocks (the others attend in 14x14 windows), are resampled to strides 4, 8, 16, 32 and
feed detectron2's FPN. Relative positions, drop path 0.1; GroupNorm between the two transposed
convolutions of the 4x up-sampling (as the paper), synchronised BatchNorm in FPN and in the box and mask
heads; 4conv1fc box head. 1024 px, large-scale jitter 0.1-2.0, batch 64, AdamW, half-period cosine over
100 epochs with a 0.25-epoch warm-up.

The heads' BatchNorm is detectron2's ``NaiveSyncBatchNorm(stats_mode="N")`` (``"naiveSyncBN_N"``), as in
detectron2's LSJ baselines (``configs/new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py``): the crop can leave a
GPU's images without any instance, so its mask head gets no RoI, which ``nn.SyncBatchNorm`` refuses and
this norm takes, weighting each GPU's statistics by its number of RoIs. The relative positions are
detectron2's (per-block decomposed tables), not the paper's shared BEiT-style biases (README).

Li et al. searched the learning rate, weight decay and drop path for every pre-training; lr 8e-5 and
weight decay 0.1 (one rate for every layer) are a starting point for MAE-style ViT-B, to tune with
``--opts optimizer.lr=... optimizer.weight_decay=... model.backbone.bottom_up.net.drop_path_rate=...``.
"""
from functools import partial

from fvcore.common.param_scheduler import CosineParamScheduler
from torch import nn

from detectron2 import model_zoo
from detectron2.config import LazyCall as L
from detectron2.modeling import ViT
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
from detectron2.solver import WarmupParamScheduler

from detection.backbone import ViTPyramid

from ._common import VIT_B_WINDOW_BLOCKS, lsj_dataloader

UPSAMPLE_NORM = "GN"  # GroupNorm(32, 768) between the 4x path's two transposed convolutions
NECK_NORM = "SyncBN"  # FPN's maps always hold every image of a GPU's batch
HEAD_NORM = "naiveSyncBN_N"  # NaiveSyncBatchNorm(stats_mode="N"): takes a GPU whose images have no instance

model = model_zoo.get_config("common/models/mask_rcnn_fpn.py").model
_constants = model_zoo.get_config("common/data/constants.py").constants
model.update(pixel_mean=_constants.imagenet_rgb256_mean, pixel_std=_constants.imagenet_rgb256_std,
             input_format="RGB")
model.backbone = L(FPN)(
    bottom_up=L(ViTPyramid)(
        net=L(ViT)(img_size=1024, patch_size=16, embed_dim=768, depth=12, num_heads=12, drop_path_rate=0.1,
                   window_size=14, window_block_indexes=VIT_B_WINDOW_BLOCKS, use_rel_pos=True,
                   pretrain_img_size=224, norm_layer=partial(nn.LayerNorm, eps=1e-6)),
        out_blocks=[2, 5, 8, 11],
        scale_factors=(4.0, 2.0, 1.0, 0.5),
        norm=UPSAMPLE_NORM,
    ),
    in_features=["s2", "s3", "s4", "s5"],
    out_channels=256,
    norm=NECK_NORM,
    top_block=L(LastLevelMaxPool)(),
    square_pad=1024,
)
model.proposal_generator.head.conv_dims = [-1, -1]
model.roi_heads.box_head.update(conv_dims=[256] * 4, fc_dims=[1024], conv_norm=HEAD_NORM)
model.roi_heads.mask_head.conv_norm = HEAD_NORM

dataloader = lsj_dataloader(image_size=1024, min_scale=0.1, max_scale=2.0, batch_size=64, image_format="RGB")

optimizer = model_zoo.get_config("common/optim.py").AdamW
optimizer.update(lr=8e-5, weight_decay=0.1)
optimizer.params.overrides = {"pos_embed": {"weight_decay": 0.0}}

ITERS = 184375  # 100 epochs of COCO train2017 (118k images) at batch 64
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(CosineParamScheduler)(start_value=1.0, end_value=0.0),
    warmup_length=0.25 / 100,  # a quarter of one of the 100 epochs
    warmup_factor=0.001,
)

train = model_zoo.get_config("common/train.py").train
train.update(max_iter=ITERS, device="cuda", seed=0)
train.amp.enabled = True
train.ddp.fp16_compression = True

benchmark = dict(protocol="vit-fpn-mask-rcnn", train_split="train2017", val_split="val2017",
                 dataset_name="COCO val2017")
