"""Building blocks of the configs in this folder (not a config to run: its name starts with ``_``).

Every runnable config defines detectron2's ``model``, ``dataloader``, ``optimizer``, ``lr_multiplier`` and
``train``, plus ``benchmark``: the record's ``protocol``, the dataset's split folders under ``--data``
(``<data>/<split>/`` images, ``<data>/annotations/instances_<split>.json``) and optionally ``dataset_name``,
the records' ``dataset`` when the data folder has no ``meta.json`` naming it (``emae.records``).
"""
from functools import partial

import detectron2.data.transforms as T
from detectron2 import model_zoo
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.vit import get_vit_lr_decay_rate
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.roi_heads import CascadeROIHeads, FastRCNNConvFCHead, FastRCNNOutputLayers

# ViT-B's global-attention blocks: the last of each quarter; every other block attends in 14x14 windows
VIT_B_WINDOW_BLOCKS = [i for i in range(12) if i not in (2, 5, 8, 11)]
VIT_L_WINDOW_BLOCKS = [i for i in range(24) if i not in (5, 11, 17, 23)]


def lsj_dataloader(image_size: int, min_scale: float, max_scale: float, batch_size: int, image_format: str):
    """COCO loaders with large-scale jitter: flip, resize by a random factor, crop or pad to a square.

    Evaluation resizes the longer side to ``image_size``. Boxes are recomputed from the cropped masks.
    The dataset names and the evaluator's output folder are filled in by ``emae eval detect``.
    """
    dataloader = model_zoo.get_config("common/data/coco.py").dataloader
    dataloader.train.mapper.update(
        augmentations=[
            L(T.RandomFlip)(horizontal=True),
            L(T.ResizeScale)(min_scale=min_scale, max_scale=max_scale, target_height=image_size,
                             target_width=image_size),
            L(T.FixedSizeCrop)(crop_size=(image_size, image_size), pad=False),
        ],
        image_format=image_format,
        recompute_boxes=True,
    )
    dataloader.train.total_batch_size = batch_size
    dataloader.test.mapper.augmentations = [
        L(T.ResizeShortestEdge)(short_edge_length=image_size, max_size=image_size)]
    # COCOeval in Python (the C++ fast path needs detectron2._C); both tasks even when nothing is detected
    dataloader.evaluator.update(use_fast_impl=False, tasks=("bbox", "segm"))
    return dataloader


def vit_layer_decay(optimizer, depth: int, rate: float) -> None:
    """Layer-wise lr decay over the ViT's blocks (``rate ** (depth + 1 - layer)``); no decay on pos_embed."""
    optimizer.params.lr_factor_func = partial(get_vit_lr_decay_rate, num_layers=depth, lr_decay_rate=rate)
    optimizer.params.overrides = {"pos_embed": {"weight_decay": 0.0}}


def use_vit_large(net, optimizer, window_blocks=VIT_L_WINDOW_BLOCKS) -> None:
    """ViT-L/16 in place of ViT-B/16: 1024-d, 24 blocks, 16 heads, drop path 0.4, lr decay 0.8."""
    net.update(embed_dim=1024, depth=24, num_heads=16, drop_path_rate=0.4, window_block_indexes=window_blocks)
    vit_layer_decay(optimizer, depth=24, rate=0.8)


def use_cascade_heads(roi_heads, norm: str = "LN") -> None:
    """Cascade R-CNN's three box stages (IoU 0.5, 0.6, 0.7) with 4conv1fc heads, in place of one stage."""
    for key in ("box_head", "box_predictor", "proposal_matcher"):
        roi_heads.pop(key)
    roi_heads.update(
        _target_=CascadeROIHeads,
        box_heads=[L(FastRCNNConvFCHead)(input_shape=ShapeSpec(channels=256, height=7, width=7),
                                         conv_dims=[256] * 4, fc_dims=[1024], conv_norm=norm) for _ in range(3)],
        box_predictors=[
            L(FastRCNNOutputLayers)(input_shape=ShapeSpec(channels=1024), test_score_thresh=0.05,
                                    box2box_transform=L(Box2BoxTransform)(weights=(xy, xy, wh, wh)),
                                    cls_agnostic_bbox_reg=True, num_classes="${...num_classes}")
            for xy, wh in ((10, 5), (20, 10), (30, 15))],
        proposal_matchers=[L(Matcher)(thresholds=[iou], labels=[0, 1], allow_low_quality_matches=False)
                           for iou in (0.5, 0.6, 0.7)],
    )
