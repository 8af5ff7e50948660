"""Encoder weights for timm's ``VisionTransformer``: MAE's encoder names are already timm's.

Written as a bare state dict (the decoder and ``mask_token`` dropped), which timm loads either way:

- ``timm.create_model("vit_base_patch16_224", pretrained=True, num_classes=N,
  pretrained_cfg_overlay=dict(file=PATH))``: every encoder key is loaded and a new N-way head is created
  (timm loads non-strictly when the number of classes differs from the pre-trained config's 1000);
- ``timm.create_model("vit_base_patch16_224", num_classes=0, checkpoint_path=PATH)``: a strict load, so the
  model must have no head (``num_classes=0``) and the final ``norm`` (the default ``global_pool="token"``).

A ViT without a timm name of its own (our Fashion-MNIST ViT) is created from any ViT name with its shape
as arguments, e.g. ``img_size=32, patch_size=4, embed_dim=128, depth=4, num_heads=4, in_chans=1``.
``evaluation.backbone`` reads the same file and reports every key.

The ``.pth`` stays a bare state dict, which ``model.load_state_dict(torch.load(PATH))`` also loads, so it has
no room for the shape: read back, its heads are those of the registered architecture of the same patch size,
width and depth, else 64-d heads, unless ``--num-heads`` says; its LayerNorm epsilon is MAE's 1e-6. The
``.safetensors`` export keeps the whole shape (heads and epsilon included) and the config in its metadata,
where timm does not look.
"""
from __future__ import annotations

from functools import partial

from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from emae.checkpoint import NORM_EPS, EncoderInfo

CONTAINER = None


def convert(encoder: dict[str, Tensor], info: EncoderInfo) -> dict[str, Tensor]:
    return dict(encoder)


def build_vit(norm_eps: float = NORM_EPS, **kwargs) -> VisionTransformer:
    """timm's ``VisionTransformer`` of these constructor arguments, its LayerNorms of epsilon ``norm_eps``
    (MAE's 1e-6, timm's default; Hugging Face ViTs use 1e-12). Plain values only, so that the arguments can
    be saved beside a checkpoint and the model rebuilt from them."""
    return VisionTransformer(norm_layer=partial(nn.LayerNorm, eps=norm_eps), **kwargs)
