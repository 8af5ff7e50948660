"""The masked-autoencoder ViT shared by MAE and EMAE.

Parameter names and shapes follow the official MAE ``MaskedAutoencoderViT``, so state dicts move both
ways with ``strict=True``. All K parts of an image go through the encoder and the decoder as one batch
of ``B * K`` sequences; the patch embedding is computed once per image and shared by its parts.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from emae.errors import EmaeError
from emae.losses import patchify
from emae.masking import PartMasks
from emae.pos_embed import sincos_2d


@dataclass(frozen=True)
class ViTArch:
    """Hyper-parameters of an encoder-decoder pair."""

    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    mlp_ratio: float = 4.0
    timm_name: str = ""  # the timm model of the same encoder, where one exists


ARCHS: dict[str, ViTArch] = {}


def register_arch(name: str, arch: ViTArch) -> None:
    ARCHS[name] = arch


# a ViT small enough to pre-train on Fashion-MNIST (32 px, N = 64 patches of 4 px) in minutes on a CPU
register_arch("vit_tiny_fmnist", ViTArch(patch_size=4, embed_dim=128, depth=4, num_heads=4, decoder_embed_dim=64,
                                         decoder_depth=2, decoder_num_heads=2))
# the same width with 8 px patches (N = 16 at 32 px): four times fewer tokens, the small-scale study's model
register_arch("vit_tiny_p8_fmnist", ViTArch(patch_size=8, embed_dim=128, depth=4, num_heads=4, decoder_embed_dim=64,
                                            decoder_depth=2, decoder_num_heads=2))
register_arch("vit_small_patch16", ViTArch(16, 384, 12, 6, timm_name="vit_small_patch16_224"))
register_arch("vit_base_patch16", ViTArch(16, 768, 12, 12, timm_name="vit_base_patch16_224"))
register_arch("vit_large_patch16", ViTArch(16, 1024, 24, 16, timm_name="vit_large_patch16_224"))
register_arch("vit_huge_patch14", ViTArch(14, 1280, 32, 16, timm_name="vit_huge_patch14_224"))


def get_arch(name: str) -> ViTArch:
    if name not in ARCHS:
        raise EmaeError(f"unknown architecture {name!r}; choose one of {sorted(ARCHS)}")
    return ARCHS[name]


class MaskedAutoencoderViT(nn.Module):
    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, decoder_embed_dim: int = 512, decoder_depth: int = 8,
                 decoder_num_heads: int = 16, mlp_ratio: float = 4.0,
                 norm_layer: Callable[..., nn.Module] = partial(nn.LayerNorm, eps=1e-6)):
        super().__init__()
        if img_size % patch_size:
            raise EmaeError(f"image size {img_size} is not divisible by the patch size {patch_size}")
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.grid = self.patch_embed.grid_size
        self.num_patches = self.patch_embed.num_patches

        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches + 1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList(
            [Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer) for _ in range(depth)])
        self.norm = norm_layer(embed_dim)

        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, self.num_patches + 1, decoder_embed_dim),
                                              requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            [Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
             for _ in range(decoder_depth)])
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2 * in_chans, bias=True)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """MAE's initialisation: fixed sin-cos embeddings, xavier-uniform linears and patch projection."""
        self.pos_embed.data.copy_(sincos_2d(self.pos_embed.shape[-1], self.grid).unsqueeze(0))
        self.decoder_pos_embed.data.copy_(sincos_2d(self.decoder_pos_embed.shape[-1], self.grid).unsqueeze(0))
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(self._init_module)

    @staticmethod
    def _init_module(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def embed_patches(self, imgs: Tensor) -> Tensor:
        """``patch_embed``'s projection (a convolution of stride p) as one matrix product of its weights with the
        patchified images: the same numbers, and on a CPU a backward several times faster than the convolution's.

        Args:
            imgs: (B, C, H, W) at the model's image size.
        Returns:
            (B, N, D) patch embeddings.
        """
        if tuple(imgs.shape[1:]) != (self.in_chans, *self.patch_embed.img_size):
            raise EmaeError(f"images of shape {tuple(imgs.shape[1:])} do not fit the model's "
                            f"{(self.in_chans, *self.patch_embed.img_size)} (C, H, W)")
        proj = self.patch_embed.proj
        weight = proj.weight.permute(0, 2, 3, 1).reshape(proj.out_channels, -1)  # (D, p * p * C), patchify's order
        return F.linear(patchify(imgs, self.patch_size), weight, proj.bias)

    def forward_encoder(self, imgs: Tensor, ids_keep: Tensor) -> Tensor:
        """Encode the visible patches of every part.

        Args:
            imgs: (B, C, H, W).
            ids_keep: (B, K, L) visible patch indices of each part.
        Returns:
            (B * K, 1 + L, D) latent tokens, cls token first.
        """
        x = self.embed_patches(imgs) + self.pos_embed[:, 1:, :]  # (B, N, D), once per image
        b, k, length = ids_keep.shape
        offsets = torch.arange(b, device=imgs.device).view(b, 1, 1) * self.num_patches
        x = x.reshape(b * self.num_patches, -1)[(ids_keep + offsets).reshape(-1)]
        x = x.view(b * k, length, -1)
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(b * k, -1, -1)
        x = torch.cat([cls, x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_decoder(self, latent: Tensor, ids_keep: Tensor) -> Tensor:
        """Predict every patch of every part from its latent tokens.

        Args:
            latent: (B * K, 1 + L, D) from :meth:`forward_encoder`.
            ids_keep: (B, K, L).
        Returns:
            (B, K, N, P) predicted patch values, P = patch_size**2 * C.
        """
        b, k, length = ids_keep.shape
        x = self.decoder_embed(latent)
        dim = x.shape[-1]
        # mask tokens everywhere, the visible tokens scattered back to their positions
        tokens = torch.scatter(self.mask_token.to(x.dtype).expand(b * k, self.num_patches, dim), 1,
                               ids_keep.reshape(b * k, length, 1).expand(-1, -1, dim), x[:, 1:])
        x = torch.cat([x[:, :1], tokens], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_pred(self.decoder_norm(x))
        return x[:, 1:].reshape(b, k, self.num_patches, -1)

    def forward(self, imgs: Tensor, masks: PartMasks) -> Tensor:
        """Predictions of every part, (B, K, N, P), parts in the order of ``masks.mask``."""
        preds = [self.forward_decoder(self.forward_encoder(imgs, ids), ids) for ids in masks.ids_keep]
        return preds[0] if len(preds) == 1 else torch.cat(preds, dim=1)

    def forward_features(self, imgs: Tensor) -> Tensor:
        """Encode whole images without masking: (B, C, H, W) -> (B, 1 + N, D)."""
        ids = torch.arange(self.num_patches, device=imgs.device).expand(imgs.shape[0], 1, -1)
        return self.forward_encoder(imgs, ids)


def build_model(arch: str, img_size: int, in_chans: int) -> MaskedAutoencoderViT:
    """The model of a registered architecture at an image size and channel count."""
    return MaskedAutoencoderViT(img_size=img_size, in_chans=in_chans, **_model_kwargs(get_arch(arch)))


def init_model(arch: str, img_size: int, in_chans: int, seed: int) -> MaskedAutoencoderViT:
    """The model a run of ``seed`` starts from: MAE's initialisation under ``torch.manual_seed(seed)``. With no
    training, it is the untrained backbone every accuracy is read against."""
    torch.manual_seed(seed)
    return build_model(arch, img_size, in_chans)


def _model_kwargs(arch: ViTArch) -> dict:
    kwargs = asdict(arch)
    kwargs.pop("timm_name")
    return kwargs
