"""Masks as pure functions of a noise tensor, so that any mask can be reproduced from its noise.

Every strategy returns :class:`PartMasks`: the visible patch indices of each part (a *part* is one masked
view of an image, the paper's P_k) and the binary mask over all patches. Parts with the same number of
visible patches form one group and run through the encoder as one batch of ``B * K_g`` sequences.
Following MAE, mask value 1 means *masked* (hidden from the encoder, predicted by the decoder).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from emae.errors import EmaeError


class PartMasks(NamedTuple):
    ids_keep: tuple[Tensor, ...]  # per group: (B, K_g, L_g) visible patch indices of each part
    mask: Tensor  # (B, K, N) float, 1 = masked; parts in group order, K = sum of K_g

    @property
    def parts(self) -> int:
        return self.mask.shape[1]


def visible_count(num_patches: int, mask_ratio: float) -> int:
    """Visible patches per part for a mask ratio, as MAE computes it: ``int(N * (1 - ratio))``."""
    if not 0.0 < mask_ratio < 1.0:
        raise EmaeError(f"mask ratio must be in (0, 1), got {mask_ratio}")
    keep = int(num_patches * (1 - mask_ratio))
    if keep < 1:
        raise EmaeError(f"mask ratio {mask_ratio} leaves no visible patch out of {num_patches}")
    return keep


def mask_from_ids(ids_keep: Tensor, num_patches: int) -> Tensor:
    """Binary masks of visible indices.

    Args:
        ids_keep: (B, K, L) visible patch indices.
    Returns:
        (B, K, N) float mask, 0 at the visible indices and 1 elsewhere.
    """
    mask = torch.ones(*ids_keep.shape[:2], num_patches, device=ids_keep.device)
    return mask.scatter_(2, ids_keep, 0.0)


def _part_masks(groups: list[Tensor], num_patches: int) -> PartMasks:
    return PartMasks(tuple(groups), torch.cat([mask_from_ids(g, num_patches) for g in groups], dim=1))


def random_masking(noise: Tensor, mask_ratio: float) -> PartMasks:
    """MAE's random mask: keep the patches with the smallest noise.

    Args:
        noise: (B, N) uniform noise.
    Returns:
        one part per image: ids_keep (B, 1, int(N * (1 - mask_ratio))).
    """
    num_patches = noise.shape[1]
    keep = visible_count(num_patches, mask_ratio)
    ids_shuffle = torch.argsort(noise, dim=1)
    return _part_masks([ids_shuffle[:, None, :keep]], num_patches)


def parallel_mask(noise: Tensor, parts: int) -> PartMasks:
    """EMAE's parallel mask: one noise vector per image, argsort, split into K equal chunks.

    Part k sees chunk k, so the parts are disjoint, their union is every patch (sampling without
    replacement), and each part's mask ratio is 1 - 1/K.

    Args:
        noise: (B, N) uniform noise.
        parts: K, which must divide N.
    Returns:
        ids_keep (B, K, N // K).
    """
    batch, num_patches = noise.shape
    if parts < 2:
        raise EmaeError(f"the parallel mask needs K >= 2 parts, got K={parts}")
    if num_patches % parts:
        raise EmaeError(f"K={parts} parts must divide the number of patches N={num_patches}")
    ids_shuffle = torch.argsort(noise, dim=1)
    return _part_masks([ids_shuffle.view(batch, parts, num_patches // parts)], num_patches)


def random_k_masks(noise: Tensor, mask_ratio: float) -> PartMasks:
    """K independent MAE random masks of the same image ("pure random", sampling with replacement).

    Args:
        noise: (B, K, N) uniform noise, one vector per part.
    Returns:
        ids_keep (B, K, int(N * (1 - mask_ratio))).
    """
    num_patches = noise.shape[2]
    keep = visible_count(num_patches, mask_ratio)
    ids_shuffle = torch.argsort(noise, dim=2)
    return _part_masks([ids_shuffle[:, :, :keep]], num_patches)


def complementary_mask(noise: Tensor, mask_ratio: float) -> PartMasks:
    """One random view with ``1 - mask_ratio`` visible, and its complement as a second view.

    Args:
        noise: (B, N) uniform noise.
    Returns:
        two groups: ids_keep (B, 1, L) and (B, 1, N - L) with L = int(N * (1 - mask_ratio)).
    """
    num_patches = noise.shape[1]
    keep = visible_count(num_patches, mask_ratio)
    ids_shuffle = torch.argsort(noise, dim=1)
    return _part_masks([ids_shuffle[:, None, :keep], ids_shuffle[:, None, keep:]], num_patches)


def noise_shape(strategy: str, batch: int, num_patches: int, parts: int) -> tuple[int, ...]:
    """The noise a strategy consumes: (B, K, N) for ``random-k``, (B, N) for the others."""
    return (batch, parts, num_patches) if strategy == "random-k" else (batch, num_patches)


def make_part_masks(strategy: str, noise: Tensor, parts: int, mask_ratio: float) -> PartMasks:
    """Dispatch by strategy name: ``random``, ``parallel``, ``random-k`` or ``complementary``."""
    if strategy == "random":
        return random_masking(noise, mask_ratio)
    if strategy == "parallel":
        return parallel_mask(noise, parts)
    if strategy == "random-k":
        return random_k_masks(noise, mask_ratio)
    if strategy == "complementary":
        return complementary_mask(noise, mask_ratio)
    raise EmaeError(f"unknown mask strategy {strategy!r}; choose random, parallel, random-k or complementary")
