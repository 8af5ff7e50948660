# UperNet + ViT-B on ADE20K, 512x512, 160k iterations: mmsegmentation's MAE recipe, as MAE and EMAE report it
# (AdamW lr 1e-4, weight decay 0.05, layer decay 0.65, batch 16 = 8 GPUs x 2, relative position bias
# initialised at zero, features from blocks 3, 5, 7, 11). `emae eval segment` sets the data root, the
# backbone weights (backbone.init_cfg), the work dir and the seed.
_base_ = "mmseg::mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py"

dataset_name = "ADE20K val"  # the `dataset` of the result records
model = dict(pretrained=None, backbone=dict(init_cfg=None))
