"""Masks as pure functions of a noise tensor, so that any mask can be reproduced from its noise.

The noise of pre-training is :func:`per_image_noise`: a counter-based hash of (run seed, epoch, image index,
position), so an image's mask depends on those alone, not on the process, the batch or the loader worker, and a
DDP run draws the masks one process would. Every argsort is stable, so noise values that tie (24 bits of
resolution) order by patch position whatever the batch, the device or its sort kernel.

Every strategy returns :class:`PartMasks`: the visible patch indices of each part (a *part* is one masked
view of an image, the paper's P_k) and the binary mask over all patches. Parts with the same number of
visible patches form one group and run through the encoder as one batch of ``B * K_g`` sequences.
Following MAE, mask value 1 means *masked* (hidden from the encoder, predicted by the decoder).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from emae.errors import EmaeError


# splitmix64's increment (the golden gamma) and multipliers, as the int64 values of their 64-bit patterns
_GAMMA = 0x9E3779B97F4A7C15 - (1 << 64)
_MIX1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_MIX2 = 0x94D049BB133111EB - (1 << 64)
_INT64 = range(-(1 << 63), 1 << 63)
# the streams of :func:`image_keys`: an image's mask and its augmentation draw from unrelated keys
MASK_STREAM, AUGMENT_STREAM = 0, 1


def _wrap(x: Tensor | int) -> Tensor | int:
    """``x`` modulo 2**64 as a signed int64 value: what int64 tensors' sums and products do by themselves."""
    return x if isinstance(x, Tensor) else (x + (1 << 63)) % (1 << 64) - (1 << 63)


def _shift_right(x: Tensor | int, bits: int) -> Tensor | int:
    """Logical right shift of an int64 bit pattern (``>>`` is arithmetic: it copies the sign bit)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mix64(x: Tensor | int) -> Tensor | int:
    """splitmix64's output function on int64 bit patterns: an int64 tensor elementwise, or a Python int."""
    x = _wrap((x ^ _shift_right(x, 30)) * _MIX1)
    x = _wrap((x ^ _shift_right(x, 27)) * _MIX2)
    return x ^ _shift_right(x, 31)


def _absorb(state: Tensor | int, value: Tensor | int) -> Tensor | int:
    """splitmix64's step with ``value`` added: ``mix64(state + value + gamma)``."""
    return _mix64(_wrap(state + value + _GAMMA))


def _run_state(stream: int, seed: int, epoch: int) -> int:
    """The state after absorbing (``stream``, ``seed``, ``epoch``), from 0."""
    state = 0
    for name, value in (("stream", stream), ("seed", seed), ("epoch", epoch)):
        if not isinstance(value, int) or isinstance(value, bool) or value not in _INT64:
            raise EmaeError(f"the {name} of a per-image draw must be an int64 integer, got {value!r}")
        state = _absorb(state, value)
    return state


def image_key(seed: int, epoch: int, index: int, stream: int) -> int:
    """The key of one image, in plain Python: ``image_keys(seed, epoch, torch.tensor([index]), stream)[0]``."""
    if not isinstance(index, int) or isinstance(index, bool) or index not in _INT64:
        raise EmaeError(f"an image index must be an int64 integer, got {index!r}")
    return _absorb(_run_state(stream, seed, epoch), index)


def image_keys(seed: int, epoch: int, index: Tensor, stream: int) -> Tensor:
    """One 64-bit key per image of (stream, run seed, epoch, dataset index), the same on every device.

    The state starts at 0 and absorbs ``stream``, ``seed``, ``epoch`` and the index in turn, each as
    ``state = mix64(state + value + gamma)`` (splitmix64's step). Streams: :data:`MASK_STREAM` for the masks,
    :data:`AUGMENT_STREAM` for the crop and flip (:class:`emae.data.PretrainImages`, through :func:`image_key`).

    Args:
        index: (B,) integer dataset indices, on any device.
    Returns:
        (B,) int64 keys (bit patterns) on ``index``'s device.
    Raises:
        EmaeError: for a non-integer or not 1-D ``index``, or a ``seed``, ``epoch`` or ``stream`` outside int64.
    """
    if not isinstance(index, Tensor) or index.ndim != 1 or index.dtype.is_floating_point or index.dtype.is_complex \
            or index.dtype == torch.bool:
        got = f"{index.dtype} of shape {tuple(index.shape)}" if isinstance(index, Tensor) else repr(index)
        raise EmaeError(f"image indices must be a 1-D integer tensor, got {got}")
    return _absorb(_run_state(stream, seed, epoch), index.to(torch.int64))


def per_image_noise(seed: int, epoch: int, index: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Uniform noise in [0, 1) for each image, a pure function of (seed, epoch, image index, position).

    Element ``p`` (in row-major order of ``shape``) of image ``i`` is the ``p``-th number of splitmix64 started at
    the image's key (:func:`image_keys` of :data:`MASK_STREAM`): ``mix64(key + (p + 1) * gamma)``, whose top 24
    bits divided by 2**24 make a float32 (the resolution of ``torch.rand``). Vectorised int64 torch ops, so the
    values are the same on every device, in any batch and at any position in it.

    Args:
        seed: the run seed.
        epoch: the epoch (0-based) of the draw.
        index: (B,) integer dataset indices of the batch's images.
        shape: the noise of one image: (N,) or, for ``random-k``, (K, N) (:func:`noise_shape` without its B).
    Returns:
        (B, *shape) float32 on ``index``'s device, multiples of 2**-24 in [0, 1).
    Raises:
        EmaeError: for bad ``index``, ``seed`` or ``epoch`` (:func:`image_keys`), or a ``shape`` that is not
            a tuple of positive integers.
    """
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n > 0 for n in shape):
        raise EmaeError(f"the per-image noise shape must be a tuple of positive integers, got {shape!r}")
    keys = image_keys(seed, epoch, index, MASK_STREAM)
    positions = torch.arange(1, math.prod(shape) + 1, dtype=torch.int64, device=index.device)
    bits = _mix64(keys[:, None] + positions * _GAMMA)
    return (_shift_right(bits, 40).to(torch.float32) * 2.0 ** -24).view(len(index), *shape)


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
    ids_shuffle = torch.argsort(noise, dim=1, stable=True)
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
    ids_shuffle = torch.argsort(noise, dim=1, stable=True)
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
    ids_shuffle = torch.argsort(noise, dim=2, stable=True)
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
    ids_shuffle = torch.argsort(noise, dim=1, stable=True)
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
