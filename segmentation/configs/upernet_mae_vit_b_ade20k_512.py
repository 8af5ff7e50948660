# UperNet + ViT-B on ADE20K, 512x512, 160k iterations: mmsegmentation's MAE recipe, as MAE and EMAE report it
# (AdamW lr 1e-4, weight decay 0.05, layer decay 0.65, batch 16 = 8 GPUs x 2, relative position bias
# initialised at zero, features from blocks 3, 5, 7, 11). `emae eval segment` sets the data root, the
# backbone weights (backbone.init_cfg), the work dir and the seed.
_base_ = "mmseg::mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py"

dataset_name = "ADE20K val"  # the `dataset` of the result records
model = dict(pretrained=None, backbone=dict(init_cfg=None))
# mmseg's layer decay in the form mmseg 1.x asks for (LayerDecayOptimizerConstructor with layer_decay_rate is
# deprecated): the same learning rates, layer by layer
optim_wrapper = dict(paramwise_cfg=dict(_delete_=True, num_layers=12, decay_rate=0.65, decay_type="layer_wise_vit"),
                     constructor="LearningRateDecayOptimizerConstructor")
# mmseg's ADE20K pipelines, with label 0 ignored through the dataset's reduce_zero_label (ADE20KDataset's
# default) instead of LoadAnnotations', which mmseg 1.x deprecates: the same labels
crop_size = (512, 512)
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations"),
    dict(type="RandomResize", scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type="RandomCrop", crop_size=crop_size, cat_max_ratio=0.75),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PhotoMetricDistortion"),
    dict(type="PackSegInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=(2048, 512), keep_ratio=True),
    dict(type="LoadAnnotations"),
    dict(type="PackSegInputs"),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
