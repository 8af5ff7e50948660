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
from dataclasses import asdict, dataclass

from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from emae.checkpoint import EncoderInfo, encoder_info, load_checkpoint, model_state, split_encoder
from emae.errors import EmaeError
from emae.models import get_arch

CLASSIFIER_PREFIX = "head."


@dataclass(frozen=True)
class BackboneWeights:
    """A checkpoint's encoder, ready to be put into a timm ViT."""

    path: str
    encoder: dict[str, Tensor]  # MAE / timm key names; no decoder, mask_token or classifier
    info: EncoderInfo
    mlp_ratio: float
    arch: str  # the registered architecture it fits, or a description (vit_p16_d768_l12)
    config: dict | None  # our pre-training config, where the checkpoint has one
    dropped: tuple[str, ...]  # the decoder, mask_token and classifier keys removed


@dataclass(frozen=True)
class LoadReport:
    """What a load did with every key."""

    loaded: tuple[str, ...]  # checkpoint keys copied into the model
    missing: tuple[str, ...]  # model keys the checkpoint lacks: freshly initialised
    unexpected: tuple[str, ...]  # checkpoint keys the model does not use
    dropped: tuple[str, ...]  # decoder, mask_token and classifier keys, removed before the load
    pos_embed_grid: tuple[int, int] | None  # (checkpoint grid, model grid) where resampled

    def lines(self) -> list[str]:
        lines = [f"loaded {len(self.loaded)} tensors",
                 f"missing (freshly initialised): {', '.join(self.missing) or 'none'}",
                 f"unexpected (not used): {', '.join(self.unexpected) or 'none'}",
                 f"dropped: {_summarise(self.dropped)}"]
        if self.pos_embed_grid:
            old, new = self.pos_embed_grid
            lines.append(f"pos_embed resampled from a {old}x{old} to a {new}x{new} grid")
        return lines

    def to_dict(self) -> dict:
        return {"missing": list(self.missing), "unexpected": list(self.unexpected), "dropped": len(self.dropped),
                "pos_embed_grid": list(self.pos_embed_grid) if self.pos_embed_grid else None}


def _summarise(keys: tuple[str, ...]) -> str:
    if not keys:
        return "none"
    decoder = [k for k in keys if k.startswith("decoder_")]
    other = [k for k in keys if not k.startswith("decoder_")]
    return ", ".join(other + ([f"{len(decoder)} decoder tensors"] if decoder else []))


def read_backbone(path: str | os.PathLike, arch: str = "") -> BackboneWeights:
    """Read a checkpoint's encoder and work out its architecture.

    The number of heads, which weights do not show, comes from ``arch`` when given (it must fit the
    weights), else from the pre-training config's architecture, else from the registered architecture of
    the same patch size, width and depth, else from the usual 64-d heads of the width.
    """
    obj = load_checkpoint(path)
    state = model_state(obj, path)
    encoder, dropped = split_encoder(state)
    head = sorted(k for k in encoder if k.startswith(CLASSIFIER_PREFIX))
    encoder = {k: v for k, v in encoder.items() if not k.startswith(CLASSIFIER_PREFIX)}
    config = _pretrain_config(obj)
    shape = encoder_info(encoder, path, num_heads=1)  # the heads are settled below
    name = arch or (config or {}).get("arch") or shape.registered_arch
    if name:
        spec = get_arch(name)
        fits = (spec.patch_size, spec.embed_dim, spec.depth) == (shape.patch_size, shape.embed_dim, shape.depth)
        if not fits:
            raise EmaeError(f"{path}: the weights are a ViT with patch {shape.patch_size}, width {shape.embed_dim} "
                            f"and depth {shape.depth}, which does not fit {name} (patch {spec.patch_size}, width "
                            f"{spec.embed_dim}, depth {spec.depth})")
        info = encoder_info(encoder, path, spec.num_heads)
    else:
        info = encoder_info(encoder, path)
        name = info.arch_name()
    fc1 = encoder.get("blocks.0.mlp.fc1.weight")
    if fc1 is None:
        raise EmaeError(f"{path}: not a ViT encoder: the key 'blocks.0.mlp.fc1.weight' is missing")
    return BackboneWeights(str(path), encoder, info, fc1.shape[0] / info.embed_dim, name, config,
                           tuple(dropped + head))


def _pretrain_config(obj: dict) -> dict | None:
    """Our pre-training config: a checkpoint's ``config``, or the ``config`` inside an export's metadata."""
    config = obj.get("config")
    if not isinstance(config, dict):
        return None
    if "target" in config and "encoder" in config:  # an export's metadata (safetensors)
        config = config.get("config")
    return config if isinstance(config, dict) and "arch" in config else None


def vit_kwargs(weights: BackboneWeights, img_size: int = 0, num_classes: int = 0, global_pool: str = "token",
               drop_path_rate: float = 0.0) -> dict:
    """The ``VisionTransformer`` arguments of the model the weights go into (saved to rebuild it)."""
    info = weights.info
    img_size = img_size or info.img_size
    if img_size % info.patch_size:
        raise EmaeError(f"image size {img_size} is not divisible by the patch size {info.patch_size}")
    return dict(img_size=img_size, patch_size=info.patch_size, in_chans=info.in_chans, embed_dim=info.embed_dim,
                depth=info.depth, num_heads=info.num_heads, mlp_ratio=weights.mlp_ratio, num_classes=num_classes,
                global_pool=global_pool, drop_path_rate=drop_path_rate)


def build_vit(weights: BackboneWeights, **kwargs) -> tuple[VisionTransformer, LoadReport]:
    """A timm ViT (``vit_kwargs(weights, **kwargs)``) holding the weights, and what the load did."""
    model = VisionTransformer(**vit_kwargs(weights, **kwargs))
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
                                                                                   BackboneWeights]:
    """:func:`read_backbone` then :func:`build_vit`: (model, report, weights)."""
    weights = read_backbone(path, arch)
    model, report = build_vit(weights, **kwargs)
    return model, report, weights


def print_load(weights: BackboneWeights, report: LoadReport) -> None:
    """Print the backbone's architecture and what the load did with every key."""
    info = asdict(weights.info)
    source = "its pre-training config" if weights.config else "the weights"
    print(f"backbone {weights.path}: {weights.arch} (patch {info['patch_size']}, width {info['embed_dim']}, "
          f"depth {info['depth']}, {info['num_heads']} heads, {info['in_chans']} channels, {info['img_size']} px; "
          f"from {source})")
    for line in report.lines():
        print(f"  {line}")
