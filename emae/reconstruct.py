"""Reconstructions of masked images by a pre-trained MAE / EMAE model, as pure functions of tensors.

The tensor operations under the decoder analyses (``emae visualize``, ``emae eval consistency``, ``emae eval
reconstruction``), which load the models and data themselves. Shapes: B images, M masks (or parts) per image,
N patches, P = patch_size**2 * C values per patch. Mask value 1 means *masked*, as everywhere in :mod:`emae.masking`.

Un-normalising ``norm_pix_loss`` predictions. A model trained with ``norm_pix_loss`` predicts each patch
normalised by its own mean and standard deviation, which a real reconstruction cannot know for a masked
patch. Two choices are offered (``stats``):

- ``visible`` (default): one mean and variance per image and mask, pooled over that mask's visible pixels,
  which the model sees: nothing of the masked patches is used, so the reconstruction and any similarity
  measured on it are leak-free, but flat (every masked patch gets the same brightness and contrast).
- ``target``: each masked patch's own mean and variance taken from the original image, as the MAE authors'
  visualisations of norm-pix models do. Brightness and contrast of every patch come from the original, the
  model supplies only the structure inside each patch: a similarity to the original measured on it leaks
  information the model never saw, so it is only ever reported labelled as such.

Models trained without ``norm_pix_loss`` predict pixels directly and need neither. In every reconstruction
the visible patches are pasted back from the original image.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor

from emae.errors import EmaeError
from emae.losses import patchify, unpatchify
from emae.masking import PartMasks, random_k_masks
from emae.models import MaskedAutoencoderViT

UNNORM_STATS = ("visible", "target")  # the default first
EPS = 1.0e-6  # as in emae.losses.pixel_targets


def random_masks(batch: int, masks: int, num_patches: int, mask_ratio: float, generator: torch.Generator,
                 device: torch.device | str = "cpu") -> PartMasks:
    """M independent MAE random masks per image, drawn from ``generator``.

    Returns:
        PartMasks with ids_keep (B, M, int(N * (1 - mask_ratio))) and mask (B, M, N).
    """
    noise = torch.rand(batch, masks, num_patches, generator=generator, device=generator.device)
    return random_k_masks(noise.to(device), mask_ratio)


def seeded_masks(batch: int, num_patches: int, mask_ratio: float, seeds: Iterable[int],
                 device: torch.device | str = "cpu") -> PartMasks:
    """One MAE random mask per seed, the same for every run with that seed: mask m of image b comes from
    row b of the noise that ``torch.Generator().manual_seed(seeds[m])`` draws.

    Returns:
        PartMasks with ids_keep (B, M, L) and mask (B, M, N), M = len(seeds).
    """
    noise = torch.stack([torch.rand(batch, num_patches, generator=torch.Generator().manual_seed(int(s)))
                         for s in seeds], dim=1)
    return random_k_masks(noise.to(device), mask_ratio)


@torch.no_grad()
def predict(model: MaskedAutoencoderViT, imgs: Tensor, masks: PartMasks) -> Tensor:
    """The decoder's predictions for every mask: imgs (B, C, H, W) -> (B, M, N, P), in the model's output
    space (per-patch normalised for a ``norm_pix_loss`` model)."""
    return model(imgs, masks).float()


def unnormalize_predictions(pred: Tensor, imgs: Tensor, mask: Tensor, patch_size: int, norm_pix: bool,
                            stats: str = "visible") -> Tensor:
    """Predictions in the image's (mean/std-normalised) pixel space.

    Args:
        pred: (B, M, N, P) decoder output.
        imgs: (B, C, H, W) the model's input images.
        mask: (B, M, N), 1 = masked.
        stats: ``visible`` (one mean and variance per image and mask over the visible pixels) or ``target``
            (each patch's own mean and variance from ``imgs``: leaks the masked patches); see the module docstring.
    Returns:
        (B, M, N, P)
    """
    if stats not in UNNORM_STATS:
        raise EmaeError(f"unknown un-normalisation statistics {stats!r}; choose one of {UNNORM_STATS}")
    if not norm_pix:
        return pred
    target = patchify(imgs, patch_size).float()  # (B, N, P)
    if stats == "target":
        mean = target.mean(dim=-1, keepdim=True).unsqueeze(1)  # (B, 1, N, 1)
        var = target.var(dim=-1, keepdim=True).unsqueeze(1)
    else:
        visible = (1.0 - mask).unsqueeze(-1)  # (B, M, N, 1)
        count = visible.sum(dim=(2, 3), keepdim=True) * target.shape[-1]
        mean = (visible * target.unsqueeze(1)).sum(dim=(2, 3), keepdim=True) / count
        var = (visible * (target.unsqueeze(1) - mean) ** 2).sum(dim=(2, 3), keepdim=True) / (count - 1).clamp(min=1)
    return pred * (var + EPS) ** 0.5 + mean


def paste_visible(pred: Tensor, imgs: Tensor, mask: Tensor, patch_size: int) -> Tensor:
    """Reconstructions: visible patches from the image, masked ones from the (pixel-space) predictions.

    Args:
        pred: (B, M, N, P) predictions in pixel space (:func:`unnormalize_predictions`).
        imgs: (B, C, H, W).
        mask: (B, M, N), 1 = masked.
    Returns:
        (B, M, C, H, W)
    """
    b, m = pred.shape[:2]
    target = patchify(imgs, patch_size).float().unsqueeze(1)
    w = mask.unsqueeze(-1).to(pred.dtype)
    patches = pred * w + target * (1.0 - w)
    return _to_images(patches, imgs, patch_size).view(b, m, *imgs.shape[1:])


def masked_inputs(imgs: Tensor, mask: Tensor, patch_size: int, fill: float = 0.0) -> Tensor:
    """What the encoder sees: visible patches, the masked ones set to ``fill`` (0 = the data mean, as MAE's demo).

    Args:
        imgs: (B, C, H, W); mask (B, M, N), 1 = masked.
    Returns:
        (B, M, C, H, W)
    """
    b, m = mask.shape[:2]
    target = patchify(imgs, patch_size).float().unsqueeze(1)
    w = mask.unsqueeze(-1)
    patches = target * (1.0 - w) + fill * w
    return _to_images(patches, imgs, patch_size).view(b, m, *imgs.shape[1:])


def _to_images(patches: Tensor, imgs: Tensor, patch_size: int) -> Tensor:
    """(B, M, N, P) -> (B * M, C, H, W) for the patch grid of ``imgs``."""
    b, m, n, p = patches.shape
    c, h, w = imgs.shape[1:]
    return unpatchify(patches.reshape(b * m, n, p), patch_size, c, (h // patch_size, w // patch_size))


def reconstruct(model: MaskedAutoencoderViT, imgs: Tensor, masks: PartMasks, norm_pix: bool,
                stats: str = "visible") -> Tensor:
    """Reconstruct each image under each mask, visible patches pasted back: (B, C, H, W) -> (B, M, C, H, W)."""
    pred = predict(model, imgs, masks)
    pixels = unnormalize_predictions(pred, imgs, masks.mask, model.patch_size, norm_pix, stats)
    return paste_visible(pixels, imgs, masks.mask, model.patch_size)


def to_unit_range(imgs: Tensor, mean: Iterable[float], std: Iterable[float]) -> Tensor:
    """Undo the input normalisation and clip to [0, 1]: (..., C, H, W) -> same shape."""
    mean_t = torch.tensor(tuple(mean), dtype=imgs.dtype, device=imgs.device).view(-1, 1, 1)
    std_t = torch.tensor(tuple(std), dtype=imgs.dtype, device=imgs.device).view(-1, 1, 1)
    return (imgs * std_t + mean_t).clamp(0.0, 1.0)


def pairwise_consistency(pred: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """How much the predictions of the same patch under different masks disagree, per image.

    Args:
        pred: (B, M, N, P) predictions of each image under M masks (in any one space).
        mask: (B, M, N), 1 = masked.
    Returns:
        ``(l1, var)``, each (B,):

        - ``l1``: the mean, over the ordered pairs of masks (i, j), i != j, and the patches masked in both,
          of the mean absolute difference of the two predictions over the P values; every (pair, patch)
          counts once.
        - ``var``: the mean, over the patches masked in at least two masks, of the variance (ddof=1) of the
          predictions across those masks, averaged over the P values.

        Both are NaN for an image where no patch is masked twice.
    """
    b, m, n, _ = pred.shape
    mask = mask.to(pred.dtype)
    l1_sum = pred.new_zeros(b)
    pairs = pred.new_zeros(b)
    for i in range(m - 1):
        dist = (pred[:, i : i + 1] - pred[:, i + 1 :]).abs().mean(dim=-1)  # (B, M - i - 1, N)
        both = mask[:, i : i + 1] * mask[:, i + 1 :]
        l1_sum += (dist * both).sum(dim=(1, 2))
        pairs += both.sum(dim=(1, 2))
    w = mask.unsqueeze(-1)  # (B, M, N, 1)
    count = w.sum(dim=1)  # (B, N, 1)
    mean = (w * pred).sum(dim=1) / count.clamp(min=1)
    var = (w * (pred - mean.unsqueeze(1)) ** 2).sum(dim=1) / (count - 1).clamp(min=1)  # (B, N, P)
    twice = (count.squeeze(-1) >= 2).to(pred.dtype)  # (B, N)
    var_mean = (var.mean(dim=-1) * twice).sum(dim=1) / twice.sum(dim=1)
    return l1_sum / pairs, var_mean
