"""Any ViT checkpoint as a timm ``VisionTransformer``, with a report of every key.

Reads our pre-training checkpoints, official MAE checkpoints (``{"model": ...}``, encoder only, with the
decoder, or fine-tuned), our exports and timm ViT state dicts, through :func:`emae.checkpoint.load_checkpoint`
(no code is executed). The decoder and ``mask_token`` are dropped, and so is a checkpoint's classifier
(``head.*``): every evaluation trains its own. Position embeddings are resampled (bicubic) when the
evaluation image size differs from the pre-training one.

The load is strict except for what the evaluation replaces on purpose, and the report names it: a new
classifier (``head.*`` missing), and with global average pooling MAE's ``fc_norm`` (``fc_norm.*`` missing,
freshly initialised) in place of the final ``norm`` (``norm.*`` unused). Any other missing or unexpected
key, a shape that does not fit, or an architecture that does not fit the weights is an error.
"""
from __future__ import annotations

import os
from dataclasses import asdict

from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer

from emae.checkpoint import LoadReport, Weights, read_weights
from emae.errors import EmaeError
from emae.export import timm as timm_export


def vit_kwargs(weights: Weights, img_size: int = 0, num_classes: int = 0, global_pool: str = "token",
               drop_path_rate: float = 0.0) -> dict:
    """The ``VisionTransformer`` arguments of the model the weights go into (saved to rebuild it)."""
    info = weights.info
    img_size = img_size or info.img_size
    if img_size % info.patch_size:
        raise EmaeError(f"image size {img_size} is not divisible by the patch size {info.patch_size}")
    return dict(img_size=img_size, patch_size=info.patch_size, in_chans=info.in_chans, embed_dim=info.embed_dim,
                depth=info.depth, num_heads=info.num_heads, mlp_ratio=weights.mlp_ratio, num_classes=num_classes,
                global_pool=global_pool, drop_path_rate=drop_path_rate, norm_eps=info.norm_eps)


def build_vit(weights: Weights, **kwargs) -> tuple[VisionTransformer, LoadReport]:
    """A timm ViT (``vit_kwargs(weights, **kwargs)``) holding the weights, and what the load did."""
    model = timm_export.build_vit(**vit_kwargs(weights, **kwargs))
    state = dict(weights.encoder)
    expected = model.state_dict()
    grids = None
    if state["pos_embed"].shape != expected["pos_embed"].shape:
        old, new = weights.info.grid, model.patch_embed.grid_size[0]
        state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], new_size=[new, new], old_size=[old, old],
                                                    num_prefix_tokens=1)
        grids = (old, new)
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(v.shape)}" for k, v in expected.items()
                  if k in state and state[k].shape != v.shape]
    if mismatched:
        raise EmaeError(f"{weights.path}: shapes do not fit a {weights.arch} ViT: {'; '.join(mismatched)}")
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    replaced = {k for k in expected if k.startswith(("head.", "fc_norm."))}  # the evaluation's own layers
    unused = {"norm.weight", "norm.bias"} if "fc_norm.weight" in expected else set()
    if bad := sorted(set(missing) - replaced):
        hint = " (its final norm is fc_norm: use global_pool avg)" if "fc_norm.weight" in state else ""
        raise EmaeError(f"{weights.path}: the checkpoint lacks {bad}, which a {weights.arch} ViT needs{hint}; "
                        f"a partial load is refused")
    if bad := sorted(set(unexpected) - unused):
        raise EmaeError(f"{weights.path}: keys {bad} have no place in a {weights.arch} ViT; a partial load is refused")
    model.load_state_dict(state, strict=False)  # strict but for the keys checked above
    loaded = tuple(sorted(set(state) & set(expected)))
    return model, LoadReport(loaded, tuple(missing), tuple(unexpected), weights.dropped, grids)


def load_backbone(path: str | os.PathLike, arch: str = "", **kwargs) -> tuple[VisionTransformer, LoadReport,
                                                                                   Weights]:
    """:func:`emae.checkpoint.read_weights` then :func:`build_vit`: (model, report, weights)."""
    weights = read_weights(path, arch)
    model, report = build_vit(weights, **kwargs)
    return model, report, weights


def print_load(weights: Weights, report: LoadReport) -> None:
    """Print the backbone's architecture and what the load did with every key."""
    info = asdict(weights.info)
    source = "its pre-training config" if weights.config else "the weights"
    print(f"backbone {weights.path}: {weights.arch} (patch {info['patch_size']}, width {info['embed_dim']}, "
          f"depth {info['depth']}, {info['num_heads']} heads, {info['in_chans']} channels, {info['img_size']} px; "
          f"from {source})")
    for line in report.lines():
        print(f"  {line}")
