"""Reading and writing checkpoints safely.

Writing is atomic (a temporary file in the same folder, then a rename), so a run killed mid-write leaves
the previous checkpoint intact. Reading never executes code: ``torch.load(weights_only=True)`` or
safetensors, and a file that needs pickled Python objects is refused with an explanation.

Our pre-training checkpoint is a dict with ``model`` (official MAE key names), ``optimizer``, ``scaler``,
``epoch``, ``step``, ``rng`` and ``config`` (a plain dict). Official MAE checkpoints (``{"model": ...}``,
encoder-only or with the decoder) and plain state dicts are read by the same functions.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from emae.errors import EmaeError
from emae.models import ARCHS, init_model

if TYPE_CHECKING:
    from emae.config import PretrainConfig

DECODER_PREFIXES = ("decoder_", "mask_token")
# the usual number of attention heads of a ViT of each width (64-d heads)
HEADS_BY_WIDTH = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}


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

    A safetensors file is returned as ``{"model": tensors}`` plus its metadata entries (``config``, ...).
    """
    path = Path(path)
    if not path.is_file():
        raise EmaeError(f"{path}: checkpoint not found")
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    try:
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
            f"loaded, and only tensors, numbers, strings and containers are read. Re-save the weights alone (for "
            f"example torch.save(ckpt['model'], 'weights.pth') in a trusted session) or as safetensors") from None
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
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            metadata = f.metadata() or {}
    except Exception as e:  # SafetensorError, OSError, or a header that is not JSON
        raise EmaeError(f"{path}: not a readable safetensors file (truncated or corrupt){_detail(path, e)}") from None
    obj: dict[str, Any] = {"model": tensors}
    for key, text in metadata.items():
        try:
            obj[key] = json.loads(text)
        except json.JSONDecodeError:
            raise EmaeError(f"{path}: metadata '{key}' is not JSON") from None
    return obj


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

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def registered_arch(self) -> str:
        """The name of the registered architecture (``emae.models.ARCHS``) of this patch size, width and depth;
        empty if there is none."""
        shape = (self.patch_size, self.embed_dim, self.depth)
        return next((name for name, s in ARCHS.items() if (s.patch_size, s.embed_dim, s.depth) == shape), "")

    def arch_name(self, config: dict | None = None) -> str:
        """The architecture's name: our pre-training config's, else the registered one of this shape, else a
        description (``vit_p16_d768_l12``)."""
        if config and "arch" in config:
            return config["arch"]
        return self.registered_arch or f"vit_p{self.patch_size}_d{self.embed_dim}_l{self.depth}"


def encoder_info(encoder: dict[str, Tensor], path: str | os.PathLike, num_heads: int | None = None) -> EncoderInfo:
    """Read the encoder's shape from its weights (MAE / timm key names).

    ``num_heads`` cannot be read from weights; without it the usual 64-d heads of the width are assumed.
    """
    for key in ("patch_embed.proj.weight", "pos_embed", "cls_token"):
        if key not in encoder:
            raise EmaeError(f"{path}: not a ViT encoder: the key '{key}' is missing")
    proj = encoder["patch_embed.proj.weight"]
    embed_dim, in_chans, patch, _ = proj.shape
    tokens = encoder["pos_embed"].shape[1] - (1 if "cls_token" in encoder else 0)
    grid = int(round(tokens**0.5))
    if grid * grid != tokens:
        raise EmaeError(f"{path}: pos_embed has {tokens} patch positions, not a square grid")
    depth = 1 + max((int(m.group(1)) for k in encoder if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)
    if depth == 0:
        raise EmaeError(f"{path}: not a ViT encoder: no 'blocks.N.' keys")
    if num_heads is None:
        if embed_dim not in HEADS_BY_WIDTH:
            raise EmaeError(f"{path}: cannot tell the number of attention heads of a {embed_dim}-d ViT; "
                            f"pass it explicitly")
        num_heads = HEADS_BY_WIDTH[embed_dim]
    return EncoderInfo(patch, embed_dim, depth, num_heads, in_chans, grid * patch)


def load_encoder(path: str | os.PathLike) -> tuple[dict[str, Tensor], EncoderInfo, dict | None]:
    """Read any supported checkpoint's encoder: (encoder state, its shape, our config if present).

    The number of heads comes from our config's architecture, or the ``encoder`` entry of an exported
    file, when the checkpoint has one.
    """
    from emae.models import get_arch

    obj = load_checkpoint(path)
    encoder, _ = split_encoder(model_state(obj, path))
    config = obj.get("config") if isinstance(obj.get("config"), dict) else None
    if config and "arch" in config:
        arch = get_arch(config["arch"])
        info = encoder_info(encoder, path, arch.num_heads)
        if (info.patch_size, info.embed_dim, info.depth) != (arch.patch_size, arch.embed_dim, arch.depth):
            raise EmaeError(f"{path}: the weights are a ViT with patch {info.patch_size}, width {info.embed_dim} "
                            f"and depth {info.depth}, but its config names {config['arch']} (patch "
                            f"{arch.patch_size}, width {arch.embed_dim}, depth {arch.depth})")
        return encoder, info, config
    heads = obj["encoder"]["num_heads"] if isinstance(obj.get("encoder"), dict) else None
    return encoder, encoder_info(encoder, path, heads), config
