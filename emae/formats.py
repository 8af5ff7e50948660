"""The checkpoint formats the field writes, detected once and mapped to official MAE key names.

Every file is read by :func:`emae.checkpoint.load_checkpoint` (``torch.load(weights_only=True)`` or
safetensors: nothing read executes code). :func:`read_source` detects its format once (:func:`detect_format`,
from its keys and entries) and maps it to official MAE's key names: ``cls_token``, ``pos_embed``,
``patch_embed.proj.*``, ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*``, ``norm.*``, and for
the decoder ``mask_token``, ``decoder_embed``, ``decoder_pos_embed``, ``decoder_blocks.N.*``, ``decoder_norm``,
``decoder_pred``. Beside the weights it keeps what the file states that weights do not show: a pre-training
config, attention heads, the LayerNorm epsilon. :func:`emae.checkpoint.read_weights` settles the shape from it.
"""
from __future__ import annotations

import argparse
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from emae.checkpoint import NORM_EPS, load_checkpoint, model_state
from emae.errors import EmaeError

# format name -> what it is (the error for a file of none of them lists these)
FORMATS = {
    "emae": "emae pretrain checkpoints (model and config)",
    "mae-pretrain": "official MAE main_pretrain.py checkpoints (model, optimizer, epoch, scaler, args)",
    "mae": "state dicts in official MAE / timm key names (patch_embed.proj, pos_embed, blocks.N, ...), bare or "
           "under model, state_dict or module: MAE's released weights, timm ViTs with or without a classifier, "
           "emae's .pth timm exports",
    "emae-export": "emae exports that carry their shape (.safetensors; .pth for detectron2 and mmseg), of which "
                   "the timm ones are read back",
    "hf-vit": "Hugging Face ViTMAEForPreTraining, ViTMAEModel, ViTModel and ViTForImageClassification: a "
              "save_pretrained folder (config.json with model.safetensors or pytorch_model.bin) or its weights file",
}
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # a save_pretrained folder's weights, in this preference
HF_NORM_EPS = 1e-12  # transformers' default layer_norm_eps of ViTConfig and ViTMAEConfig
HF_MODEL_TYPES = ("vit", "vit_mae")
# Hugging Face config.json entry -> the EncoderInfo field it states (checked against the weights)
HF_SHAPE = {"patch_size": "patch_size", "hidden_size": "embed_dim", "num_hidden_layers": "depth",
            "num_channels": "in_chans"}
# official MAE main_pretrain.py argument -> our config's field, where one maps
MAE_ARGS = {"model": "arch", "input_size": "img_size", "data_path": "data",
            **{name: name for name in ("mask_ratio", "norm_pix_loss", "batch_size", "blr", "lr", "min_lr",
                                       "weight_decay", "warmup_epochs", "seed")}}

_VIT = r"(?:vit\.)?"  # ViTModel and ViTMAEModel files have no "vit." prefix; the task models have one
# a Hugging Face layer's keys (transformers 4.x and 5.x files; 5.x module names) -> official MAE block names;
# attn.q / attn.k / attn.v are concatenated into attn.qkv by hf_to_mae
_HF_LAYER = {
    r"layernorm_before": "norm1",
    r"layernorm_after": "norm2",
    r"attention\.attention\.query|attention\.q_proj": "attn.q",
    r"attention\.attention\.key|attention\.k_proj": "attn.k",
    r"attention\.attention\.value|attention\.v_proj": "attn.v",
    r"attention\.output\.dense|attention\.o_proj": "attn.proj",
    r"intermediate\.dense|mlp\.fc1": "mlp.fc1",
    r"output\.dense|mlp\.fc2": "mlp.fc2",
}
# where the layers are: the encoder's, and the decoder's (decoder_layers in 4.x, decoder_encoder.layer in 5.x)
_HF_STACKS = {rf"{_VIT}(?:encoder\.layer|layers)": "blocks",
              r"decoder\.(?:decoder_layers|decoder_encoder\.layer)": "decoder_blocks"}
# (Hugging Face key pattern, official MAE key); classifier and pooler become head / pooler, left out of encoders
HF_RENAMES = (
    (rf"{_VIT}embeddings\.cls_token", "cls_token"),
    (rf"{_VIT}embeddings\.position_embeddings", "pos_embed"),
    (rf"{_VIT}embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (rf"{_VIT}layernorm\.(weight|bias)", r"norm.\1"),
    (rf"{_VIT}pooler\.dense\.(weight|bias)", r"pooler.dense.\1"),
    (r"classifier\.(weight|bias)", r"head.\1"),
    (r"decoder\.(mask_token|decoder_pos_embed|decoder_(?:embed|norm|pred)\.(?:weight|bias))", r"\1"),
    *((rf"{stack}\.(\d+)\.(?:{layer})\.(weight|bias)", rf"{ours}.\1.{name}.\2")
      for stack, ours in _HF_STACKS.items() for layer, name in _HF_LAYER.items()),
)


@dataclass(frozen=True)
class Source:
    """A checkpoint in official MAE key names, and what its file states beside the weights."""

    format: str  # a FORMATS key
    state: dict[str, Tensor]  # official MAE key names, the decoder included where present
    config: dict | None = None  # our pre-training config, or official MAE's args mapped to it (mae_config)
    num_heads: int | None = None  # stated by the file: an export's shape, a Hugging Face config
    decoder_num_heads: int | None = None
    norm_eps: float = NORM_EPS  # every LayerNorm's epsilon
    stated: dict = field(default_factory=dict)  # EncoderInfo fields the file's config states, to fit the weights
    stated_by: str = ""  # what states them, for the fit check's error


def weights_file(path: str | os.PathLike) -> Path:
    """The file that holds a checkpoint's weights: ``path`` itself, or a Hugging Face ``save_pretrained`` folder's
    ``model.safetensors`` (else ``pytorch_model.bin``)."""
    path = Path(path)
    if not path.is_dir():
        return path
    found = next((path / name for name in HF_WEIGHTS if (path / name).is_file()), None)
    if found is None:
        raise EmaeError(f"{path}: a folder without {' or '.join(HF_WEIGHTS)}; name the checkpoint file, or a "
                        f"Hugging Face save_pretrained folder")
    return found


def read_source(path: str | os.PathLike) -> Source:
    """Read a checkpoint file or Hugging Face folder, detect its format and map it to official MAE key names."""
    file = weights_file(path)
    obj = load_checkpoint(file)
    state = model_state(obj, file)
    fmt = detect_format(obj, state, file)
    if fmt == "hf-vit":
        return _hugging_face(state, file)
    if fmt == "emae-export":
        return _export(obj, state, file)
    return Source(fmt, state, obj["config"] if fmt == "emae" else mae_config(obj) if fmt == "mae-pretrain" else None)


def detect_format(obj: dict, state: dict[str, Tensor], path: str | os.PathLike) -> str:
    """The FORMATS name of a loaded checkpoint (``obj``, its state dict ``state``): an export by its ``target``
    and ``encoder`` entries, then MAE / timm key names by ``patch_embed.proj.weight`` (ours with our config,
    official MAE's training checkpoint with main_pretrain.py's ``args`` of an ``mae_*`` model), then Hugging
    Face's by its patch embedding. A file of none of them is an error naming it and the formats read."""
    if isinstance(obj.get("target"), str) and isinstance(obj.get("encoder"), dict):
        return "emae-export"
    if "patch_embed.proj.weight" in state:
        if isinstance(obj.get("config"), dict) and "arch" in obj["config"]:
            return "emae"
        args = obj.get("args")
        if isinstance(args, argparse.Namespace) and str(getattr(args, "model", "")).startswith("mae_"):
            return "mae-pretrain"
        return "mae"  # main_finetune.py's and main_linprobe.py's args are no pre-training config: not read
    if any(f"{prefix}embeddings.patch_embeddings.projection.weight" in state for prefix in ("", "vit.")):
        return "hf-vit"
    raise EmaeError(f"{path}: not a ViT encoder: the key 'patch_embed.proj.weight' is missing, and its keys "
                    f"({', '.join(sorted(state)[:3])}, ...) are of none of the formats read: "
                    f"{'; '.join(FORMATS.values())}")


def mae_config(obj: dict) -> dict:
    """Our config of an official MAE ``main_pretrain.py`` checkpoint, from its ``args`` where they map
    (:data:`MAE_ARGS`): method ``mae``; the model ``mae_vit_base_patch16`` is the architecture
    ``vit_base_patch16`` where that is registered (else :func:`emae.checkpoint.read_weights` names the shape);
    ``epochs`` is ``epoch + 1``, the epochs its weights were trained for (``epoch`` is the 0-based index of the
    last one done), else ``args.epochs`` (the planned length), else -1 (unknown); ``data`` is ``data_path``."""
    from emae.models import ARCHS

    args = vars(obj["args"])
    config = {ours: args[theirs] for theirs, ours in MAE_ARGS.items() if theirs in args}
    arch = config.pop("arch").removeprefix("mae_")
    epoch = obj.get("epoch")
    config = {"method": "mae", "data": "unknown", **config,
              "epochs": epoch + 1 if isinstance(epoch, int) else args.get("epochs", -1)}
    return dict(config, arch=arch) if arch in ARCHS else config


def _export(obj: dict, state: dict[str, Tensor], path: Path) -> Source:
    """An ``emae export`` file: a timm export, with the shape and config it carries; another target's is an
    error (its keys are that framework's)."""
    target, encoder, config = obj["target"], obj["encoder"], obj.get("config")
    if target != "timm":
        raise EmaeError(f"{path}: an emae export for {target}, in {target}'s key names, which only {target} "
                        f"reads; pass the checkpoint it was exported from")
    return Source("emae-export", state, config if isinstance(config, dict) and "arch" in config else None,
                  encoder.get("num_heads"), norm_eps=encoder.get("norm_eps", NORM_EPS))


def _hugging_face(state: dict[str, Tensor], path: Path) -> Source:
    """A Hugging Face ViT / ViTMAE, with the heads, epsilon and shape its ``config.json`` (beside the weights)
    states; without one, the usual heads and transformers' default epsilon."""
    config_path = path.parent / "config.json"
    config = _hf_config(config_path)
    stated = {ours: config[theirs] for theirs, ours in HF_SHAPE.items() if theirs in config}
    return Source("hf-vit", hf_to_mae(state, path), None, config.get("num_attention_heads"),
                  config.get("decoder_num_attention_heads"), config.get("layer_norm_eps", HF_NORM_EPS), stated,
                  str(config_path))


def _hf_config(path: Path) -> dict:
    """A Hugging Face ViT / ViTMAE ``config.json``; empty where there is none, or it is another model's (our
    pre-training runs write a config.json too)."""
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EmaeError(f"{path}: not a readable config.json ({type(e).__name__})") from None
    return config if isinstance(config, dict) and config.get("model_type") in HF_MODEL_TYPES else {}


def hf_to_mae(state: dict[str, Tensor], path: str | os.PathLike) -> dict[str, Tensor]:
    """A Hugging Face ViT / ViTMAE state dict in official MAE key names (:data:`HF_RENAMES`); each layer's
    query, key and value projections, (D, D) and (D,), concatenated in that order into ``attn.qkv``, (3D, D)
    and (3D,). A key of no known role is an error naming it."""
    out = {_hf_name(key, path): value for key, value in state.items()}
    for query in [k for k in out if ".attn.q." in k]:
        parts = [query.replace(".attn.q.", f".attn.{p}.") for p in "qkv"]
        if any(k not in out for k in parts):
            raise EmaeError(f"{path}: layer {query.split('.attn.')[0]} lacks its key or value projection")
        out[query.replace(".attn.q.", ".attn.qkv.")] = torch.cat([out.pop(k) for k in parts])
    return out


def _hf_name(key: str, path: str | os.PathLike) -> str:
    for pattern, name in HF_RENAMES:
        if found := re.fullmatch(pattern, key):
            return found.expand(name)
    raise EmaeError(f"{path}: the key '{key}' has no counterpart in MAE's ViT (read as a Hugging Face ViT)")
