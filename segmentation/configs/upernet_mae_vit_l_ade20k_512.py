# UperNet + ViT-L on ADE20K, 512x512, 160k iterations: the ViT-B recipe (upernet_mae_vit_b_ade20k_512.py)
# with the large encoder, features from blocks 7, 11, 15, 23 and drop path 0.2 (as BEiT's ViT-L UperNet).
# The paper gives layer decay 0.65 for segmentation without naming a separate value for ViT-L; MAE's
# classification fine-tuning of ViT-L uses 0.75 (override with
# --cfg-options optim_wrapper.paramwise_cfg.decay_rate=0.75).
_base_ = "./upernet_mae_vit_b_ade20k_512.py"

model = dict(
    backbone=dict(embed_dims=1024, num_layers=24, num_heads=16, drop_path_rate=0.2, out_indices=[7, 11, 15, 23]),
    neck=dict(embed_dim=1024),
    decode_head=dict(in_channels=[1024, 1024, 1024, 1024], channels=1024),
    auxiliary_head=dict(in_channels=1024))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=24, decay_rate=0.65))
