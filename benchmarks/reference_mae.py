"""MAE's pre-training step written the way the published MAE code writes it.

The benchmarks time our step against this one, and the tests check that ours computes the same
numbers. It runs on the modules of our ``MaskedAutoencoderViT`` (same weights), with the published
token handling: argsort + ``gather`` with ``repeat`` for masking, mask tokens appended by concatenation
and un-shuffled with a second ``gather``; and a plain (single-tensor) AdamW.
"""
from __future__ import annotations

import torch
from timm.optim import param_groups_weight_decay
from torch import Tensor

from emae.losses import pixel_targets
from emae.models import MaskedAutoencoderViT


def reference_forward(model: MaskedAutoencoderViT, imgs: Tensor, noise: Tensor, mask_ratio: float):
    """Returns (pred (B, N, P), mask (B, N)) for one random mask per image."""
    x = model.patch_embed(imgs) + model.pos_embed[:, 1:, :]
    n, length, d = x.shape
    len_keep = int(length * (1 - mask_ratio))
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :len_keep]
    x = torch.gather(x, 1, ids_keep.unsqueeze(-1).repeat(1, 1, d))
    mask = torch.ones(n, length, device=imgs.device)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    cls = (model.cls_token + model.pos_embed[:, :1, :]).expand(n, -1, -1)
    x = torch.cat([cls, x], dim=1)
    for blk in model.blocks:
        x = blk(x)
    x = model.decoder_embed(model.norm(x))
    mask_tokens = model.mask_token.repeat(n, ids_restore.shape[1] + 1 - x.shape[1], 1)
    x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
    x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
    x = torch.cat([x[:, :1, :], x_], dim=1) + model.decoder_pos_embed
    for blk in model.decoder_blocks:
        x = blk(x)
    pred = model.decoder_pred(model.decoder_norm(x))[:, 1:, :]
    return pred, mask


def reference_loss(model: MaskedAutoencoderViT, imgs: Tensor, noise: Tensor, mask_ratio: float = 0.75,
                   norm_pix: bool = True) -> Tensor:
    pred, mask = reference_forward(model, imgs, noise, mask_ratio)
    target = pixel_targets(imgs, model.patch_size, norm_pix)
    loss = ((pred - target) ** 2).mean(dim=-1)
    return (loss * mask).sum() / mask.sum()


def reference_optimizer(model: MaskedAutoencoderViT, lr: float, weight_decay: float = 0.05) -> torch.optim.AdamW:
    groups = param_groups_weight_decay(model, weight_decay)  # main_pretrain.py: no skip list
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), foreach=False, fused=False)
