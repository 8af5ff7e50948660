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

``--space pixel`` (default) compares predictions in the image's normalised pixel space (norm-pix
predictions un-normalised with each patch's own statistics, the same for every mask), which compares
checkpoints trained with and without ``norm_pix_loss``; ``--space prediction`` compares the raw decoder
outputs, the quantity EMAE's self-consistency loss constrains.

Writes one record per checkpoint and metric to ``OUTPUT_DIR/records.jsonl``: protocol ``consistency``,
metrics ``pairwise_l1``, ``prediction_var``, ``masked_l1`` and ``prediction_spread``, with the standard
deviations over images in ``extra``.
"""
from __future__ import annotations

import argparse
import math
import time

import torch
from torch import Tensor

from emae.errors import EmaeError
from emae.losses import patchify, pixel_targets
from emae.reconstruct import (LoadedMAE, add_data_arguments, add_model_arguments, add_record_arguments, batches,
                              each_model, load_models, pairwise_consistency, pick_device, predict,
                              random_masks, record_base, records_path, unnormalize_predictions)
from results.records import Record, append_records, provenance

SPACES = ("pixel", "prediction")
METRICS = ("pairwise_l1", "prediction_var", "masked_l1", "prediction_spread")


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
            pred = unnormalize_predictions(pred, imgs, part_masks.mask, model.patch_size, loaded.norm_pix, "target")
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_data_arguments(parser, default_images=1000)
    parser.add_argument("--masks", type=int, default=8, help="M random masks per image")
    parser.add_argument("--mask-ratio", type=float, default=0.75)
    parser.add_argument("--seed", type=int, default=0, help="seed of the masks' generator")
    parser.add_argument("--space", choices=SPACES, default="pixel",
                        help="compare predictions in normalised pixel space or as the decoder outputs them")
    add_record_arguments(parser)


def main(args: argparse.Namespace) -> int:
    device = pick_device(args.device)
    records_file = records_path(args)
    models = load_models(args)
    settings = dict(protocol="consistency", masks=args.masks, eval_mask_ratio=args.mask_ratio, seed=args.seed,
                    space=args.space, num_images=args.num_images, crop_ratio=args.crop_ratio)
    records = []
    for loaded, dataset, data_name in each_model(args, models):
        started = time.perf_counter()
        result = consistency_of(loaded, dataset, args.masks, args.mask_ratio, args.seed, args.space,
                                args.batch_size, device)
        wall = time.perf_counter() - started
        fields, config = record_base(loaded, args, settings)
        extra = dict(result, masks=args.masks, eval_mask_ratio=args.mask_ratio, space=args.space,
                     norm_pix=loaded.norm_pix, name=loaded.name)
        prov = provenance(config, loaded.path, wall)
        for metric in METRICS:
            if math.isnan(result[metric]):
                continue
            records.append(Record(**fields, protocol="consistency", metric=metric, value=result[metric],
                                  dataset=data_name, seed=args.seed, extra=extra, **prov))
        print(f"{loaded.name} ({loaded.path}): pairwise L1 {result['pairwise_l1']:.4f} "
              f"(std over images {result['pairwise_l1_std']:.4f}), prediction variance "
              f"{result['prediction_var']:.5f}, masked L1 error {result['masked_l1']:.4f}, spread of masked "
              f"predictions {result['prediction_spread']:.4f}; {result['images']} images x {args.masks} masks, "
              f"{args.space} space, {wall:.1f} s")
    append_records(records_file, records)
    print(f"wrote {len(records)} records to {records_file}")
    return 0
