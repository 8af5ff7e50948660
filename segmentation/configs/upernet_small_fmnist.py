# UperNet + the ViT of the `fmnist-small` pre-training (vit_tiny_p8_fmnist: patch 8, 128-d, 4 blocks, 4 heads,
# 1 grey channel, pre-trained at 32 px) on the Fashion-MNIST scenes: `emae pipeline`'s segment stage, 120
# iterations of 8 scenes, about 35 s on a 2-core CPU with one thread (measured: segmentation/README.md).
# Everything but the backbone's patch and the schedule is `upernet_tiny_fmnist`'s. 8 px patches make an 8x8 grid
# of the 64x64 scenes, so the tiny config's neck rescales 2, 1, 0.5, 0.25 give the ADE20K recipe's strides 4, 8,
# 16, 32 (ViT-B/16 gets them from rescales 4, 2, 1, 0.5).
_base_ = ["./upernet_tiny_fmnist.py"]

iters = 120
model = dict(backbone=dict(patch_size=8))
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-3, by_epoch=False, begin=0, end=12),
    dict(type="PolyLR", eta_min=0.0, power=1.0, begin=12, end=iters, by_epoch=False),
]
train_cfg = dict(max_iters=iters, val_interval=iters)
# a run of the pipeline's length writes only its last checkpoint
default_hooks = dict(checkpoint=dict(interval=1000))
