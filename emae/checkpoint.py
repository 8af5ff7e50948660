"""Reading and writing checkpoints safely.

Writing is atomic (a temporary file in the same folder, then a rename), so a run killed mid-write leaves
the previous checkpoint intact. Reading never executes code: ``torch.load(weights_only=True)`` or
safetensors, and a file that needs pickled Python objects (other than official MAE's ``argparse.Namespace``)
is refused with an explanation.

Our pre-training checkpoint is a dict with ``model`` (official MAE key names), ``optimizer``, ``scaler``,
``epoch``, ``step``, ``rng`` and ``config`` (a plain dict). Every other format the field writes (official MAE,
timm, Hugging Face ViTMAE / ViT) is detected and mapped to the same key names by :mod:`emae.formats`, which
:func:`read_weights` reads through.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from emae.errors import EmaeError
from emae.models import ARCHS, init_model

if TYPE_CHECKING:
    from emae.config import PretrainConfig

DECODER_PREFIXES = ("decoder_", "mask_token")
# the usual number of attention heads of a ViT of each width (64-d heads)
HEADS_BY_WIDTH = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}
NORM_EPS = 1e-6  # the LayerNorm epsilon of MAE's and timm's ViTs (Hugging Face's ViTs use 1e-12)
# the only Python object a checkpoint may hold besides tensors and containers: official MAE's ``args``
SAFE_GLOBALS = [argparse.Namespace]


def save_checkpoint(obj: dict, path: str | os.PathLike) -> None:
    """Write ``obj`` with ``torch.save`` atomically: temporary file, fsync, rename."""
    path = Path(path)
    _check_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_writable(path: Path) -> None:
    if path.is_dir():
        raise EmaeError(f"{path}: is a folder; name the file to write")
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise EmaeError(f"{path}: cannot be written: {blocking} is a file, not a folder")


def untrained_checkpoint(cfg: PretrainConfig) -> dict[str, Any]:
    """The checkpoint of a run of ``cfg`` before its first update (``emae pretrain --epochs 0``): the untrained
    backbone of the same architecture and seed, in the layout of every pre-training checkpoint."""
    model = init_model(cfg.arch, cfg.img_size, cfg.in_chans, cfg.seed)
    return {"model": model.state_dict(), "epoch": 0, "step": 0, "wall_time_s": 0.0, "config": cfg.to_dict()}


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a ``.pth``/``.pt``/``.bin`` file with ``weights_only=True``, or a ``.safetensors`` file.

    Besides tensors, numbers, strings and containers, only :data:`SAFE_GLOBALS` are unpickled (the
    ``argparse.Namespace`` of official MAE's ``args``); any other pickled object is refused. A safetensors
    file is returned as ``{"model": tensors}`` plus its metadata entries (``config``, ...).
    """
    path = Path(path)
    if not path.is_file():
        raise EmaeError(f"{path}: checkpoint not found")
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = " ".join(str(e).split())
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if not found:  # not an object weights_only refuses: a damaged file
            problem = re.search(r"WeightsUnpickler error: (.*?)(?: Check the documentation|$)", text)
            raise EmaeError(f"{path}: not a readable checkpoint (truncated or corrupt)"
                            f"{_detail(path, problem.group(1) if problem else 'cannot be unpickled')}") from None
        raise EmaeError(
            f"{path}: refused: it holds pickled Python objects ({found.group(1)}), which could run code when "
            f"loaded, and only tensors, numbers, strings, containers and argparse.Namespace are read. Re-save "
            f"the weights alone (for example torch.save(ckpt['model'], 'weights.pth') in a trusted session) or as "
            f"safetensors") from None
    except Exception as e:  # torch.load fails in many ways on a file it cannot parse
        raise EmaeError(f"{path}: not a readable checkpoint (truncated or corrupt){_detail(path, e)}") from None
    if not isinstance(obj, dict):
        raise EmaeError(f"{path}: expected a dict of tensors or a checkpoint dict, got {type(obj).__name__}")
    return obj


def _detail(path: Path, error: Exception | str) -> str:
    """``: reason`` for a checkpoint that cannot be read: what its first bytes say, else the error's first
    sentence, on one line."""
    if path.stat().st_size == 0:
        return ": the file is empty"
    with open(path, "rb") as f:
        head = f.read(4)
    if path.suffix != ".safetensors" and head[:2] != b"PK" and head[:1] != b"\x80":
        return ": it is neither a torch.save zip archive nor a pickle"
    text = " ".join(str(error).split()).split(". ")[0].rstrip(".")
    return f": {text}" if text and not text.isdigit() else f": {type(error).__name__}"


def _load_safetensors(path: Path) -> dict[str, Any]:
    """``{"model": tensors}`` plus each metadata entry: its JSON value, or the text itself where it is not
    JSON (``{"format": "pt"}``, which transformers and timm write). A metadata ``model`` entry is ignored."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            metadata = f.metadata() or {}
    except Exception as e:  # SafetensorError, OSError, or a header that is not JSON
        raise EmaeError(f"{path}: not a readable safetensors file (truncated or corrupt){_detail(path, e)}") from None
    return {**{key: _metadata_value(text) for key, text in metadata.items()}, "model": tensors}


def _metadata_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def save_safetensors(tensors: dict[str, Tensor], path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> None:
    """Write tensors as safetensors atomically, with each metadata value stored as JSON under its key."""
    from safetensors.torch import save_file

    path = Path(path)
    _check_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
              metadata={k: json.dumps(v) for k, v in (metadata or {}).items()})
    os.replace(tmp, path)


def model_state(obj: dict[str, Any], path: str | os.PathLike) -> dict[str, Tensor]:
    """The model's state dict inside a checkpoint: under ``model``, ``state_dict``, or the dict itself."""
    for key in ("model", "state_dict", "module"):
        if key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    not_tensors = sorted(k for k, v in state.items() if not isinstance(v, Tensor))
    if not state or not_tensors:
        raise EmaeError(f"{path}: no model state dict found (keys that are not tensors: {not_tensors[:5]})")
    return state


def split_encoder(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Separate the encoder from the decoder: returns (encoder state, the dropped decoder key names)."""
    encoder = {k: v for k, v in state.items() if not k.startswith(DECODER_PREFIXES)}
    dropped = sorted(k for k in state if k.startswith(DECODER_PREFIXES))
    return encoder, dropped


def load_mae_state(model: torch.nn.Module, state: dict[str, Tensor], path: str | os.PathLike) -> list[str]:
    """Load an official-layout MAE state dict (full, or encoder-only) into a ``MaskedAutoencoderViT``.

    Returns the decoder keys the file lacks (an encoder-only checkpoint); any other missing key, any
    unexpected key and any shape mismatch is an error naming the keys.
    """
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in state if k in own and state[k].shape != own[k].shape]
    missing = sorted(set(own) - set(state))
    missing_encoder = [k for k in missing if not k.startswith(DECODER_PREFIXES)]
    if unexpected or mismatched or missing_encoder:
        problems = [f"{what} {keys[:8]}" for what, keys in (("unexpected keys", unexpected), ("missing encoder keys",
                    missing_encoder), ("shape mismatches", mismatched)) if keys]
        raise EmaeError(f"{path}: does not fit the model: {'; '.join(problems)}")
    model.load_state_dict(state, strict=False)
    return missing


@dataclass(frozen=True)
class EncoderInfo:
    """What a downstream framework needs to build the ViT that an encoder state dict fits."""

    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    in_chans: int
    img_size: int  # the pre-training image size (the position-embedding grid)
    norm_eps: float = NORM_EPS  # every LayerNorm's epsilon (not in the weights: from the format or its config)

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def registered_arch(self) -> str:
        """The registered architecture (``emae.models.ARCHS``) of this patch size, width, depth and heads;
        empty if there is none."""
        shape = (self.patch_size, self.embed_dim, self.depth, self.num_heads)
        return next((name for name, a in ARCHS.items()
                     if (a.patch_size, a.embed_dim, a.depth, a.num_heads) == shape), "")

    def arch_name(self, config: dict | None = None) -> str:
        """The encoder's architecture name in every record: our pre-training config's, else the registered one
        of this shape, else a description (``vit_p16_d192_l12``: patch, width, depth)."""
        if config and "arch" in config:
            return config["arch"]
        return self.registered_arch or f"vit_p{self.patch_size}_d{self.embed_dim}_l{self.depth}"


@dataclass(frozen=True)
class DecoderInfo:
    """The shape of an MAE decoder (official key names: ``decoder_embed``, ``decoder_blocks.N``)."""

    embed_dim: int
    depth: int
    num_heads: int


@dataclass(frozen=True)
class ViTShape:
    """Everything the weights of an MAE / timm ViT say about its shape (heads: given or the usual ones)."""

    encoder: EncoderInfo
    mlp_ratio: float
    decoder: DecoderInfo | None  # None for an encoder-only state dict

    def model_kwargs(self) -> dict:
        """The keyword arguments of the ``MaskedAutoencoderViT`` these weights fit (the decoder is required),
        its LayerNorms of the encoder's ``norm_eps``."""
        e, d = self.encoder, self.decoder
        if d is None:
            raise EmaeError("an MAE model needs the decoder's shape, and the weights have no decoder")
        return dict(img_size=e.img_size, patch_size=e.patch_size, in_chans=e.in_chans, embed_dim=e.embed_dim,
                    depth=e.depth, num_heads=e.num_heads, decoder_embed_dim=d.embed_dim, decoder_depth=d.depth,
                    decoder_num_heads=d.num_heads, mlp_ratio=self.mlp_ratio,
                    norm_layer=partial(nn.LayerNorm, eps=e.norm_eps))


def default_heads(width: int, path: str | os.PathLike, head_dim: int = 64) -> int:
    """The usual attention heads of a ViT of this width: ``HEADS_BY_WIDTH`` where it differs from
    ``head_dim``-wide heads, else ``width // head_dim``. Heads cannot be read from weights."""
    if head_dim == 64 and width in HEADS_BY_WIDTH:
        return HEADS_BY_WIDTH[width]
    if width % head_dim:
        raise EmaeError(f"{path}: cannot tell the number of attention heads of a {width}-d ViT; pass it "
                        f"explicitly (--num-heads)")
    return width // head_dim


def _depth(state: dict[str, Tensor], prefix: str) -> int:
    return 1 + max((int(m.group(1)) for k in state if (m := re.match(rf"{prefix}\.(\d+)\.", k))), default=-1)


def read_vit_shape(state: dict[str, Tensor], path: str | os.PathLike, num_heads: int | None = None,
                   decoder_num_heads: int | None = None, norm_eps: float = NORM_EPS) -> ViTShape:
    """Read a ViT's shape from its weights (official MAE / timm key names): the one shape reader of the suite.

    The encoder needs ``patch_embed.proj.weight`` (D, C, p, p), ``pos_embed`` (1, [1 +] g*g, D) and
    ``blocks.N.*``; the decoder is read when ``decoder_embed.weight`` is present. Heads default to 64-d heads
    for the encoder (:func:`default_heads`) and 32-d heads for the decoder (16 for MAE's 512-d decoder);
    ``norm_eps``, which weights do not show either, is carried into the encoder's shape.
    """
    for key in ("patch_embed.proj.weight", "pos_embed"):
        if key not in state:
            raise EmaeError(f"{path}: not a ViT encoder: the key '{key}' is missing")
    embed_dim, in_chans, patch, _ = state["patch_embed.proj.weight"].shape
    tokens = state["pos_embed"].shape[1] - (1 if "cls_token" in state else 0)
    grid = int(round(tokens**0.5))
    if grid * grid != tokens:
        raise EmaeError(f"{path}: pos_embed has {tokens} patch positions, not a square grid")
    depth = _depth(state, "blocks")
    if depth == 0:
        raise EmaeError(f"{path}: not a ViT encoder: no 'blocks.N.' keys")
    heads = default_heads(embed_dim, path) if num_heads is None else num_heads
    fc1 = state.get("blocks.0.mlp.fc1.weight")
    mlp_ratio = fc1.shape[0] / embed_dim if fc1 is not None else 4.0
    decoder = None
    if "decoder_embed.weight" in state:
        width = state["decoder_embed.weight"].shape[0]
        decoder = DecoderInfo(width, _depth(state, "decoder_blocks"),
                              default_heads(width, path, 32) if decoder_num_heads is None else decoder_num_heads)
    for what, dim, h in (("encoder", embed_dim, heads), ("decoder", decoder and decoder.embed_dim,
                                                         decoder and decoder.num_heads)):
        if dim and (h < 1 or dim % h):
            raise EmaeError(f"{path}: {h} {what} heads do not divide its width {dim}")
    return ViTShape(EncoderInfo(patch, embed_dim, depth, heads, in_chans, grid * patch, norm_eps), mlp_ratio,
                    decoder)


def encoder_info(encoder: dict[str, Tensor], path: str | os.PathLike, num_heads: int | None = None) -> EncoderInfo:
    """The encoder part of :func:`read_vit_shape`; a state dict without ``cls_token`` is not an MAE encoder."""
    for key in ("patch_embed.proj.weight", "pos_embed", "cls_token"):
        if key not in encoder:
            raise EmaeError(f"{path}: not a ViT encoder: the key '{key}' is missing")
    return read_vit_shape(encoder, path, num_heads).encoder


# EncoderInfo field -> its name in the fit check's errors
SHAPE_WORDS = {"patch_size": "patch", "embed_dim": "width", "depth": "depth", "num_heads": "heads",
               "in_chans": "input channels"}


def check_shape(info: EncoderInfo, wanted: dict[str, int | None], path: str | os.PathLike, named_by: str) -> None:
    """The one fit check: what a config or an architecture (``named_by``) states of the ViT (``wanted``:
    :data:`SHAPE_WORDS` keys, None where it states nothing) must be what the weights are. The error names the
    checkpoint, its shape, ``named_by`` and each value that differs."""
    stated = {k: v for k, v in wanted.items() if v is not None}
    differ = [f"{SHAPE_WORDS[k]} {v}" for k, v in stated.items() if v != getattr(info, k)]
    if differ:
        have = ", ".join(f"{SHAPE_WORDS[k]} {getattr(info, k)}" for k in stated)
        raise EmaeError(f"{path}: the weights are a ViT of {have}, which does not fit {named_by} "
                        f"({', '.join(differ)}); choose one of the checkpoint's size")


def check_fits(info: EncoderInfo, arch: str, path: str | os.PathLike, named_by: str = "its config") -> None:
    """:func:`check_shape` against the registered architecture ``arch`` (which ``named_by`` names): its patch
    size, width and depth."""
    from emae.models import get_arch

    spec = get_arch(arch)
    check_shape(info, {"patch_size": spec.patch_size, "embed_dim": spec.embed_dim, "depth": spec.depth}, path,
                f"{arch} named by {named_by}")


# a classifier's keys: timm's and MAE's fine-tuning ``head``, Hugging Face ViTModel's ``pooler``
CLASSIFIER_PREFIXES = ("head.", "pooler.")


@dataclass(frozen=True)
class Weights:
    """A checkpoint read once and handed to every protocol: its weights, shape, architecture name and config."""

    path: str
    state: dict[str, Tensor]  # the whole model state, official MAE key names (decoder included where present)
    encoder: dict[str, Tensor]  # the encoder alone: no decoder, mask_token or classifier head
    shape: ViTShape
    arch: str  # the registered architecture it fits, or a description (vit_p16_d192_l12): the records' arch
    config: dict | None  # our pre-training config, or official MAE's args mapped to it (emae.formats)
    dropped: tuple[str, ...]  # the decoder, mask_token and classifier keys left out of ``encoder``
    format: str  # the format it was read from (emae.formats.FORMATS)

    @property
    def info(self) -> EncoderInfo:
        return self.shape.encoder

    @property
    def mlp_ratio(self) -> float:
        return self.shape.mlp_ratio


def read_weights(path: str | os.PathLike, arch: str = "", num_heads: int | None = None,
                 decoder_num_heads: int | None = None) -> Weights:
    """Read a checkpoint of any format :mod:`emae.formats` reads (a file, or a Hugging Face folder) and settle
    its shape.

    Attention heads, which weights do not show, come from ``arch`` when given (it must fit the weights: the
    fit check), else from the config's registered architecture, else ``num_heads``, else what the file states
    (an export's ``encoder`` entry, a Hugging Face ``config.json``), else the registered architecture of the
    same patch size, width and depth, else the usual 64-d heads of the width. Decoder heads likewise (from the
    architecture, else ``decoder_num_heads``, else the file's, else 32-d heads). A config without an
    architecture (official MAE's args of an unregistered model) gets the shape's name.
    """
    from emae.formats import read_source
    from emae.models import ARCHS, get_arch

    source = read_source(path)
    state, config = source.state, source.config
    encoder, dropped = split_encoder(state)
    head = sorted(k for k in encoder if k.startswith(CLASSIFIER_PREFIXES))
    encoder = {k: v for k, v in encoder.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    probe = encoder_info(encoder, path, num_heads=1)  # the heads are settled below
    if source.stated:
        check_shape(probe, source.stated, path, source.stated_by)
    registered = next((name for name, a in ARCHS.items() if (a.patch_size, a.embed_dim, a.depth) ==
                       (probe.patch_size, probe.embed_dim, probe.depth)), "")
    config_arch = (config or {}).get("arch", "")
    name = arch or (config_arch if config_arch in ARCHS else "")
    if name:
        check_fits(probe, name, path, "--arch" if arch else "its config")
    spec = get_arch(name) if name else (ARCHS[registered] if registered and num_heads is None and
                                        source.num_heads is None else None)
    heads = spec.num_heads if spec else num_heads or source.num_heads
    decoder_heads = spec.decoder_num_heads if spec else decoder_num_heads or source.decoder_num_heads
    shape = read_vit_shape(state, path, heads, decoder_heads, source.norm_eps)
    arch_name = name or shape.encoder.arch_name(config)
    if config is not None and not config_arch:
        config = dict(config, arch=arch_name)
    return Weights(str(path), state, encoder, shape, arch_name, config, tuple(dropped + head), source.format)


@dataclass(frozen=True)
class LoadReport:
    """What a load did with every key: the one load report of the suite (timm, detectron2 and mmseg loads)."""

    loaded: tuple[str, ...]  # checkpoint keys copied into the model
    missing: tuple[str, ...]  # model keys the checkpoint lacks: freshly initialised
    unexpected: tuple[str, ...]  # checkpoint keys the model does not use
    dropped: tuple[str, ...] = ()  # decoder, mask_token and classifier keys, removed before the load
    pos_embed_grid: tuple[int, int] | None = None  # (checkpoint grid, model grid) where resampled

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
