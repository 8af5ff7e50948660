"""Encoder weights for mmsegmentation's ``MAE`` backbone (``mmseg/models/backbones/mae.py``).

mmseg's MAE backbone is BEiT's layout with a full ``qkv`` bias (not BEiT's separate ``q_bias`` /
``v_bias``), so MAE's attention weights carry over unchanged; the other names change as in mmseg's
``tools/model_converters/beit2mmseg.py``:

==========================  =================================
MAE / timm                  mmseg
==========================  =================================
``patch_embed.proj.*``      ``patch_embed.projection.*``
``blocks.N.norm1.*``        ``layers.N.ln1.*``
``blocks.N.attn.qkv.*``     ``layers.N.attn.qkv.*``
``blocks.N.attn.proj.*``    ``layers.N.attn.proj.*``
``blocks.N.norm2.*``        ``layers.N.ln2.*``
``blocks.N.mlp.fc1.*``      ``layers.N.ffn.layers.0.0.*``
``blocks.N.mlp.fc2.*``      ``layers.N.ffn.layers.1.*``
``cls_token``, ``pos_embed``  unchanged (mmseg resizes ``pos_embed`` to its grid when loading)
==========================  =================================

The final ``norm`` (and a classifier's ``fc_norm`` / ``head``) is dropped: the UperNet recipe takes its
features from intermediate blocks and builds the backbone with ``final_norm=False``. Each layer's relative
position bias (``attn.relative_position_bias_table``, zero-initialised as in MAE's recipe, and its index
buffer) and layer scale (``gamma_1``, ``gamma_2``, ``init_values=1.0``) have no counterpart in MAE's
weights: they are the expected missing keys when mmseg loads this file (``EXPECTED_MISSING``).

Written as ``{"state_dict": tensors, ...}``, the container ``MAE.init_weights`` reads.
"""
from __future__ import annotations

import re

from torch import Tensor

from emae.checkpoint import EncoderInfo
from emae.errors import EmaeError

CONTAINER = "state_dict"

# (MAE name pattern, mmseg name); N is the block index
_RENAMES = (
    (r"patch_embed\.proj\.(weight|bias)", r"patch_embed.projection.\1"),
    (r"blocks\.(\d+)\.norm1\.(weight|bias)", r"layers.\1.ln1.\2"),
    (r"blocks\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)", r"layers.\1.attn.\2.\3"),
    (r"blocks\.(\d+)\.norm2\.(weight|bias)", r"layers.\1.ln2.\2"),
    (r"blocks\.(\d+)\.mlp\.fc1\.(weight|bias)", r"layers.\1.ffn.layers.0.0.\2"),
    (r"blocks\.(\d+)\.mlp\.fc2\.(weight|bias)", r"layers.\1.ffn.layers.1.\2"),
    (r"(cls_token|pos_embed)", r"\1"),
)
_DROPPED = re.compile(r"(norm|fc_norm|head)\.(weight|bias)")

# what mmseg's MAE backbone has and MAE's weights do not; "*" stands for a layer index
EXPECTED_MISSING = ("layers.*.gamma_1", "layers.*.gamma_2", "layers.*.attn.relative_position_bias_table",
                    "layers.*.attn.relative_position_index")


def convert(encoder: dict[str, Tensor], info: EncoderInfo) -> dict[str, Tensor]:
    """MAE encoder names to mmseg ``MAE`` backbone names; a key of no known role is an error."""
    out = {}
    for key, value in encoder.items():
        if _DROPPED.fullmatch(key):
            continue
        for pattern, replacement in _RENAMES:
            if re.fullmatch(pattern, key):
                out[re.sub(pattern, replacement, key)] = value
                break
        else:
            raise EmaeError(f"encoder key '{key}' has no counterpart in mmseg's MAE backbone (a ViT of "
                            f"{info.depth} blocks, {info.embed_dim}-d, was expected)")
    return out


def layer_pattern(key: str) -> str:
    """A backbone key with its layer index replaced by ``*`` (``layers.3.gamma_1`` -> ``layers.*.gamma_1``)."""
    return re.sub(r"^layers\.\d+\.", "layers.*.", key)
