"""``emae eval consistency``: how much a masked-image model's predictions of the same patch disagree across
random masks (the paper's second claim, Figures 1 and 3).

For every image, M independent MAE random masks (ratio 0.75 by default) are drawn from a generator seeded
with ``--seed``: the same masks for every checkpoint of the same patch grid, so MAE and EMAE are compared on
identical masks. The model predicts every patch under each mask; for each pair of masks and each patch
masked in both, the mean absolute difference of the two predictions is taken (``pairwise_l1``), and for each
patch masked at least twice, the variance of its predictions across masks (``prediction_var``); see
:func:`emae.reconstruct.pairwise_consistency`. Both are averaged per image, then over the images.

Agreement alone can be trivial: a decoder that predicts the same thing for a position whatever the image
agrees with itself perfectly. Two more numbers say whether it does: ``masked_l1``, the mean absolute error
of the masked predictions against the image, and ``prediction_spread``, the standard deviation of the
decoder's raw masked predictions of a position over all images and masks (near zero for such a decoder; raw,
because the pixel space lends every patch its own brightness and contrast).

``--space pixel`` (default) compares predictions in the image's normalised pixel space, which compares
checkpoints trained with and without ``norm_pix_loss``; ``--space prediction`` compares the raw decoder
outputs, the quantity EMAE's self-consistency loss constrains.

In pixel space norm-pix predictions are un-normalised with each patch's own statistics from the original
(``PIXEL_SPACE_STATS``, recorded as ``extra["unnorm"]``), not with the leak-free visible ones that
``emae eval reconstruction`` uses by default, on purpose. The comparison is between predictions of the same
image under different masks, and these statistics depend on the image alone: every mask's prediction of a
patch goes through the same increasing affine map x -> sigma * x + mu, so the mean cancels in every
difference and ``pairwise_l1`` and ``prediction_var`` are the prediction-space disagreements weighted by each
patch's sigma (its contrast), with nothing that could make two masks agree or disagree. The visible
statistics differ from mask to mask (each mask sees other patches): they would add a disagreement of their
own that no prediction made, so they would measure the masks, not the model. ``masked_l1`` does inherit the
leak: it is the error of each patch's structure given its true brightness and contrast, the same oracle
statistics for every checkpoint, not the error of an honest reconstruction (``emae eval reconstruction``).

Writes one record per checkpoint and metric to ``OUTPUT_DIR/records.jsonl``: protocol ``consistency``,
metrics ``pairwise_l1``, ``prediction_var``, ``masked_l1`` and ``prediction_spread``, with the standard
deviations over images in ``extra``, and the settings (:class:`ConsistencyConfig`) as ``OUTPUT_DIR/config.json``.
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from analysis.loader import (MASK_HELP, LoadedMAE, RecordedAnalysisConfig, add_config_arguments, batches, check_choice,
                             each_model, load_models, record_base, records_path, write_outputs)
from emae.errors import EmaeError
from emae.losses import patchify, pixel_targets
from emae.reconstruct import pairwise_consistency, predict, random_masks, unnormalize_predictions
from emae.records import Record, provenance
from emae.settings import pick_device

SPACES = ("pixel", "prediction")
PIXEL_SPACE_STATS = "target"  # the same per-patch map for every mask: see the module docstring
METRICS = ("pairwise_l1", "prediction_var", "masked_l1", "prediction_spread")


@dataclass
class ConsistencyConfig(RecordedAnalysisConfig):
    """``emae eval consistency``'s settings: the masks, their seed, and the space predictions are compared in."""

    help_for = dict(RecordedAnalysisConfig.help_for, **MASK_HELP, **{
        "masks": "M random masks per image (default 8)",
        "space": f"one of {', '.join(SPACES)}: compare predictions in normalised pixel space or as the decoder "
                 f"outputs them (default pixel)",
    })
    masks: int = 8
    mask_ratio: float = 0.75
    seed: int = 0
    space: str = "pixel"  # pixel, prediction

    def validate(self) -> "ConsistencyConfig":
        super().validate()
        check_choice("space", self.space, SPACES)
        return self

    def eval_settings(self) -> dict:
        """The settings the records hold under ``config["eval"]``."""
        return dict(protocol="consistency", masks=self.masks, eval_mask_ratio=self.mask_ratio, seed=self.seed,
                    space=self.space, num_images=self.num_images, crop_ratio=self.crop_ratio)


@torch.no_grad()
def consistency_of(loaded: LoadedMAE, dataset, masks: int, mask_ratio: float, seed: int, space: str = "pixel",
                   batch_size: int = 64, device: torch.device | str = "cpu") -> dict:
    """The consistency metric of one model over a dataset of preprocessed images.

    Returns ``pairwise_l1`` and ``prediction_var`` (means over images), their standard deviations over
    images (``*_std``), ``masked_l1`` (the mean absolute error of the masked predictions against the image:
    consistent predictions can still be wrong), ``prediction_spread`` (:class:`PredictionSpread`) and
    ``images``, the number of images with a patch masked twice.
    """
    if masks < 2:
        raise EmaeError(f"the consistency metric needs at least 2 masks per image, got {masks}")
    if space not in SPACES:
        raise EmaeError(f"unknown space {space!r}; choose one of {SPACES}")
    model = loaded.model.to(device).eval()
    generator = torch.Generator().manual_seed(seed)
    l1s, variances, errors = [], [], []
    spread = PredictionSpread()
    for imgs, _ in batches(dataset, batch_size):
        imgs = imgs.to(device)
        part_masks = random_masks(imgs.shape[0], masks, model.num_patches, mask_ratio, generator, device)
        pred = predict(model, imgs, part_masks)
        spread.update(pred, part_masks.mask)  # the decoder's own output, before any un-normalisation
        if space == "pixel":
            pred = unnormalize_predictions(pred, imgs, part_masks.mask, model.patch_size, loaded.norm_pix,
                                           PIXEL_SPACE_STATS)
            target = patchify(imgs, model.patch_size).float()
        else:
            target = pixel_targets(imgs, model.patch_size, loaded.norm_pix).float()
        l1, var = pairwise_consistency(pred, part_masks.mask)
        l1s.append(l1.cpu())
        variances.append(var.cpu())
        errors.append(masked_l1_error(pred, target, part_masks.mask).cpu())
    l1, var, error = torch.cat(l1s).double(), torch.cat(variances).double(), torch.cat(errors).double()
    valid = ~torch.isnan(l1)
    if not valid.any():
        raise EmaeError(f"no patch was masked under two of the {masks} masks (mask ratio {mask_ratio})")
    l1, var = l1[valid], var[valid]
    std = (lambda t: float(t.std()) if t.numel() > 1 else 0.0)
    return {"pairwise_l1": float(l1.mean()), "pairwise_l1_std": std(l1), "prediction_var": float(var.mean()),
            "prediction_var_std": std(var), "masked_l1": float(error.mean()), "prediction_spread": spread.compute(),
            "images": int(valid.sum())}


def masked_l1_error(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """The error of the predictions of masked patches, per image: the mean absolute difference to the
    target over the masked patches of all masks and their P values.

    Args:
        pred: (B, M, N, P); target: (B, N, P) in the same space; mask: (B, M, N), 1 = masked.
    Returns:
        (B,)
    """
    mask = mask.to(pred.dtype)
    dist = (pred - target.unsqueeze(1)).abs().mean(dim=-1)  # (B, M, N)
    return (dist * mask).sum(dim=(1, 2)) / mask.sum(dim=(1, 2)).clamp(min=1)


class PredictionSpread:
    """How much the decoder's predictions of masked patches vary at all: for each patch position and value,
    the standard deviation of its masked predictions over every image and mask of the data, averaged over
    values and positions. Near zero means predictions that depend on neither the image nor the mask: a
    model can be perfectly consistent that way, so read ``pairwise_l1`` against this and ``masked_l1``."""

    def __init__(self):
        self.sum = self.sum_sq = self.count = None

    def update(self, pred: Tensor, mask: Tensor) -> None:
        """pred (B, M, N, P), mask (B, M, N), 1 = masked."""
        w = mask.to(torch.float64).unsqueeze(-1)
        pred = pred.to(torch.float64)
        parts = ((w * pred).sum(dim=(0, 1)), (w * pred * pred).sum(dim=(0, 1)), w.sum(dim=(0, 1)))  # (N, P), (N, 1)
        if self.sum is None:
            self.sum, self.sum_sq, self.count = (p.cpu() for p in parts)
        else:
            self.sum += parts[0].cpu()
            self.sum_sq += parts[1].cpu()
            self.count += parts[2].cpu()

    def compute(self) -> float:
        seen = self.count.squeeze(-1) > 1
        mean = self.sum[seen] / self.count[seen]
        var = (self.sum_sq[seen] - self.count[seen] * mean * mean) / (self.count[seen] - 1)
        return float(var.clamp(min=0).sqrt().mean())


def run(cfg: ConsistencyConfig) -> list[Record]:
    """Measure every checkpoint of the config; append its records to ``OUTPUT_DIR/records.jsonl`` (saving
    ``config.json`` beside them) and return them."""
    device = pick_device(cfg.device)
    records_file = records_path(cfg)
    models = load_models(cfg)
    records = []
    for loaded, dataset, data_name in each_model(cfg, models):
        started = time.perf_counter()
        result = consistency_of(loaded, dataset, cfg.masks, cfg.mask_ratio, cfg.seed, cfg.space, cfg.batch_size,
                                device)
        wall = time.perf_counter() - started
        fields, config = record_base(loaded, cfg, cfg.eval_settings())
        extra = dict(result, masks=cfg.masks, eval_mask_ratio=cfg.mask_ratio, space=cfg.space,
                     unnorm=PIXEL_SPACE_STATS if cfg.space == "pixel" and loaded.norm_pix else None,
                     norm_pix=loaded.norm_pix, name=loaded.name)
        prov = provenance(config, loaded.path, wall)
        for metric in METRICS:
            if math.isnan(result[metric]):
                continue
            records.append(Record(**fields, protocol="consistency", metric=metric, value=result[metric],
                                  dataset=data_name, seed=cfg.seed, extra=extra, **prov))
        print(f"{loaded.name} ({loaded.path}): pairwise L1 {result['pairwise_l1']:.4f} "
              f"(std over images {result['pairwise_l1_std']:.4f}), prediction variance "
              f"{result['prediction_var']:.5f}, masked L1 error {result['masked_l1']:.4f}, spread of masked "
              f"predictions {result['prediction_spread']:.4f}; {result['images']} images x {cfg.masks} masks, "
              f"{cfg.space} space, {wall:.1f} s")
    write_outputs(cfg, records_file, records)
    return records


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, ConsistencyConfig)


def main(args: argparse.Namespace) -> int:
    run(ConsistencyConfig.resolve(args))
    return 0
