# UperNet + the tiny Fashion-MNIST ViT (vit_tiny_fmnist: patch 4, 128-d, 4 blocks, 4 heads, 1 grey channel)
# on Fashion-MNIST scenes (`emae data segmentation`): 64x64 grey images, 2-4 items each, 11 classes
# (background and the 10 items; background is a class, so reduce_zero_label=False). 300 iterations of 8
# scenes: about 1.5 minutes on an idle 2-core CPU. The recipe is the ADE20K one (AdamW, layer decay 0.65,
# relative position bias at zero, linear warm-up then poly decay) at a learning rate for the short schedule
# (4e-3; 1e-3 and 2e-3 learned the item classes far less in 300 iterations), with narrow UperNet heads (64
# and 32 channels; 32 and 16 learned less). Pyramid strides 2, 4, 8, 16 (4 px patches: a 16x16 grid).
_base_ = ["mmseg::_base_/models/upernet_mae.py", "mmseg::_base_/default_runtime.py"]

dataset_name = "fmnist-scenes val"  # the `dataset` of the result records
classes = ("background", "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot")
crop_size = (64, 64)
norm_cfg = dict(type="BN", requires_grad=True)
# background covers about 3/4 of the pixels: weighting it down lets the short schedule learn the item classes
class_weight = [0.25] + [1.0] * (len(classes) - 1)
# Fashion-MNIST's mean and std (0.2860, 0.3530) on the 0-255 scale
data_preprocessor = dict(type="SegDataPreProcessor", mean=[72.93], std=[90.02], bgr_to_rgb=False, pad_val=0,
                         seg_pad_val=255, size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(img_size=crop_size, patch_size=4, in_channels=1, embed_dims=128, num_layers=4, num_heads=4,
                  mlp_ratio=4, out_indices=(0, 1, 2, 3), drop_path_rate=0.0, init_values=1.0, init_cfg=None),
    neck=dict(embed_dim=128, rescales=[2, 1, 0.5, 0.25], norm_cfg=norm_cfg),
    decode_head=dict(in_channels=[128, 128, 128, 128], channels=64, num_classes=len(classes), norm_cfg=norm_cfg,
                     loss_decode=dict(class_weight=class_weight, avg_non_ignore=True)),
    auxiliary_head=dict(in_channels=128, channels=32, num_classes=len(classes), norm_cfg=norm_cfg,
                        loss_decode=dict(class_weight=class_weight, avg_non_ignore=True)),
    test_cfg=dict(mode="whole"))

train_pipeline = [
    dict(type="LoadImageFromFile", color_type="grayscale"),
    dict(type="LoadAnnotations"),  # reduce_zero_label comes from the dataset
    dict(type="RandomFlip", prob=0.5),
    dict(type="PackSegInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile", color_type="grayscale"),
    dict(type="LoadAnnotations"),
    dict(type="PackSegInputs"),
]
dataset = dict(type="BaseSegDataset", data_root="data/fmnist-scenes", metainfo=dict(classes=classes),
               img_suffix=".jpg", seg_map_suffix=".png", reduce_zero_label=False)
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False, sampler=dict(type="InfiniteSampler", shuffle=True),
    dataset=dict(dataset, data_prefix=dict(img_path="images/training", seg_map_path="annotations/training"),
                 pipeline=train_pipeline))
test_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False, sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(dataset, data_prefix=dict(img_path="images/validation", seg_map_path="annotations/validation"),
                 pipeline=test_pipeline))
test_evaluator = dict(type="IoUMetric", iou_metrics=["mIoU"])
# no validation during training: `emae eval segment` evaluates the final model once (Runner.test)
val_dataloader = val_cfg = val_evaluator = None

iters = 300
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=4e-3, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(num_layers=4, decay_rate=0.65, decay_type="layer_wise_vit"),
    constructor="LearningRateDecayOptimizerConstructor")
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-3, by_epoch=False, begin=0, end=30),
    dict(type="PolyLR", eta_min=0.0, power=1.0, begin=30, end=iters, by_epoch=False),
]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=iters, val_interval=iters)
test_cfg = dict(type="TestLoop")
default_hooks = dict(
    logger=dict(type="LoggerHook", interval=20, log_metric_by_epoch=False),
    checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=100, max_keep_ckpts=1, save_last=True))
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend="gloo"))
