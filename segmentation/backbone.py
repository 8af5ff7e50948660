"""The pre-trained encoder's hand-off to mmseg's ``MAE`` backbone, and what mmseg's own load does with it.

:func:`export_backbone` converts any checkpoint ``emae export`` reads (ours, official MAE, timm) with
``emae export --to mmseg`` into a run's folder. The backbone then loads it itself, through
``init_cfg=dict(type='Pretrained', checkpoint=...)`` in ``MAE.init_weights``. That load is non-strict and
silent, so :func:`pretrained_load_report` runs it with a hook on the backbone that records which keys it
left missing or unused, and :func:`check_load_report` accepts only the expected missing set
(``emae.export.mmseg.EXPECTED_MISSING``). Shapes are checked before the load (:func:`check_shapes`),
so a checkpoint of another size is an error naming the key and both shapes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from emae.checkpoint import EncoderInfo, LoadReport, Weights
from emae.errors import EmaeError
from emae.export import export_weights
from emae.export.mmseg import EXPECTED_MISSING, convert, layer_pattern

POS_EMBED = "pos_embed"  # resized by mmseg to the backbone's grid, so only its width must match


@dataclass(frozen=True)
class ExportedBackbone:
    """An ``emae export --to mmseg`` file and what it says about its encoder."""

    path: Path
    tensors: dict[str, Tensor]  # mmseg key names
    info: EncoderInfo
    config: dict | None  # our pre-training config, None for an official MAE or timm checkpoint
    arch: str  # the encoder's architecture name in the records (emae.checkpoint.Weights.arch)


def export_backbone(weights: Weights, dst: str | os.PathLike) -> ExportedBackbone:
    """Convert ``weights`` (read once by :func:`emae.checkpoint.read_weights`) for mmseg into ``dst``, written
    atomically."""
    path = export_weights(weights, dst, "mmseg")
    return ExportedBackbone(path, convert(weights.encoder, weights.info), weights.info, weights.config, weights.arch)


def check_shapes(backbone: nn.Module, exported: ExportedBackbone) -> None:
    """Every exported tensor must have the shape of the backbone's tensor of the same name."""
    own = backbone.state_dict()
    mismatched = []
    for key, value in exported.tensors.items():
        if key not in own:
            continue  # reported as unexpected by the load
        want = own[key].shape
        fits = value.shape[-1] == want[-1] if key == POS_EMBED else value.shape == want
        if not fits:
            mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs backbone {tuple(want)}")
    if mismatched:
        info = exported.info
        raise EmaeError(f"{exported.path}: the checkpoint's encoder ({exported.arch}: patch {info.patch_size}, "
                        f"{info.embed_dim}-d, {info.depth} blocks, {info.in_chans} channel(s)) does not fit the "
                        f"config's backbone: " + "; ".join(mismatched[:6]))


def missing_patterns(report: LoadReport) -> tuple[str, ...]:
    """The keys a load left missing with layer indices as ``*``, in order of first appearance."""
    return tuple(dict.fromkeys(layer_pattern(k) for k in report.missing))


def report_summary(report: LoadReport) -> dict:
    """The load report as the records keep it: missing key patterns and unused keys."""
    return {"missing": list(missing_patterns(report)), "unexpected": list(report.unexpected)}


def pretrained_load_report(backbone: nn.Module) -> LoadReport:
    """Initialise ``backbone`` (its ``init_cfg`` names the checkpoint) and report what the load left out."""
    results = []
    handle = backbone.register_load_state_dict_post_hook(lambda module, keys: results.append(keys))
    try:
        backbone.init_weights()
    finally:
        handle.remove()
    if len(results) != 1:
        raise EmaeError(f"the backbone's initialisation loaded {len(results)} state dicts, expected exactly one "
                        f"(is init_cfg type='Pretrained' set?)")
    missing, unexpected = tuple(results[0].missing_keys), tuple(results[0].unexpected_keys)
    own = backbone.state_dict()
    return LoadReport(tuple(k for k in own if k not in missing), missing, unexpected)


def check_load_report(report: LoadReport, path: str | os.PathLike) -> None:
    """Only the expected keys may be missing (relative position bias, layer scale), and none unused."""
    surprising = [p for p in missing_patterns(report) if p not in EXPECTED_MISSING]
    if surprising or report.unexpected:
        raise EmaeError(f"{path}: mmseg's MAE backbone did not load it as expected: missing {surprising[:8]} "
                        f"(only {list(EXPECTED_MISSING)} may be), unused {list(report.unexpected[:8])}")
