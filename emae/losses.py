"""The pre-training losses as pure functions of predictions, targets and masks.

Shapes: B images, K parts, N patches, P = patch_size**2 * channels values per patch.
"""
from __future__ import annotations

import torch
from torch import Tensor


def patchify(imgs: Tensor, patch_size: int) -> Tensor:
    """Images to patch vectors in MAE's layout (row-major patches, each (p, q, c) flattened).

    Args:
        imgs: (B, C, H, W) with H and W divisible by ``patch_size``.
    Returns:
        (B, N, patch_size**2 * C)
    """
    b, c, h, w = imgs.shape
    gh, gw = h // patch_size, w // patch_size
    x = imgs.reshape(b, c, gh, patch_size, gw, patch_size)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(b, gh * gw, patch_size * patch_size * c)


def unpatchify(patches: Tensor, patch_size: int, channels: int, grid: tuple[int, int]) -> Tensor:
    """Inverse of :func:`patchify`: (B, N, P) -> (B, C, H, W) for a (gh, gw) patch grid."""
    b = patches.shape[0]
    gh, gw = grid
    x = patches.reshape(b, gh, gw, patch_size, patch_size, channels)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(b, channels, gh * patch_size, gw * patch_size)


def pixel_targets(imgs: Tensor, patch_size: int, norm_pix: bool = True) -> Tensor:
    """MAE's regression target: patches, normalised per patch when ``norm_pix`` (``norm_pix_loss``).

    Args:
        imgs: (B, C, H, W).
    Returns:
        (B, N, P)
    """
    target = patchify(imgs, patch_size)
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    return target


def pixel_loss(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """MAE's loss on every part: per-patch MSE, averaged over the masked patches of all parts.

    With one part this is exactly MAE's ``forward_loss``; with K equal-sized parts it is the mean of the
    K parts' MAE losses.

    Args:
        pred: (B, K, N, P) predictions of each part.
        target: (B, N, P) from :func:`pixel_targets`.
        mask: (B, K, N), 1 = masked.
    """
    loss = (pred - target.unsqueeze(1)).pow(2).mean(dim=-1)
    return (loss * mask).sum() / mask.sum()


def pair_weights(mask: Tensor, values_per_patch: int) -> Tensor:
    """Weight of each ordered pair (i, j), i != j: 1 / (pairs * values masked in both parts).

    A pair whose parts share no masked patch has weight 0 (it contributes nothing).

    Args:
        mask: (B, K, N), 1 = masked.
    Returns:
        (K, K), symmetric, zero on the diagonal.
    """
    k = mask.shape[1]
    overlap = torch.einsum("bin,bjn->ij", mask, mask) * values_per_patch
    off_diagonal = ~torch.eye(k, dtype=torch.bool, device=mask.device)
    weights = torch.where(overlap > 0, 1.0 / (k * (k - 1) * overlap.clamp(min=1)), torch.zeros_like(overlap))
    return weights * off_diagonal


class _SelfConsistencyL1(torch.autograd.Function):
    """Sum over ordered pairs of w_ij * |pred_i - sg(pred_j)| on positions masked in both parts.

    Computed one part at a time against all parts, so memory stays O(B K N P): no K x K x N x P tensor is
    formed, and nothing but the predictions and masks is kept for the backward pass.
    """

    @staticmethod
    def forward(ctx, pred: Tensor, mask: Tensor, weights: Tensor) -> Tensor:
        ctx.save_for_backward(pred, mask, weights)
        total = pred.new_zeros(())
        for i in range(pred.shape[1]):
            dist = (pred[:, i : i + 1] - pred).abs().sum(dim=-1)  # (B, K, N)
            total = total + (dist * (mask[:, i : i + 1] * mask) * weights[i].view(1, -1, 1)).sum()
        return total

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        pred, mask, weights = ctx.saved_tensors
        grad = torch.empty_like(pred)
        for i in range(pred.shape[1]):
            # only part i's side of each pair (i, j) receives gradient; part j is the stop-gradient target
            sign = torch.sign(pred[:, i : i + 1] - pred)  # (B, K, N, P)
            w = (mask[:, i : i + 1] * mask * weights[i].view(1, -1, 1)).unsqueeze(-1)
            grad[:, i] = (sign * w).sum(dim=1)
        return grad * grad_out, None, None


def self_consistency_loss(pred: Tensor, mask: Tensor) -> Tensor:
    """EMAE's self-consistency loss.

    For every ordered pair of parts (i, j), i != j, the mean absolute error between part i's prediction
    and the stop-gradient of part j's prediction on the patches masked in both parts (averaged over
    those patches of the batch and their values), then averaged over the K (K - 1) pairs. Gradients flow
    only into the non-detached side of each pair.

    Args:
        pred: (B, K, N, P) predictions of each part.
        mask: (B, K, N), 1 = masked.
    """
    if pred.shape[1] < 2:
        return pred.new_zeros(())
    weights = pair_weights(mask.to(pred.dtype), pred.shape[-1])
    return _SelfConsistencyL1.apply(pred, mask.to(pred.dtype), weights)


def prediction_spread(pred: Tensor) -> Tensor:
    """How much predictions differ across the images of a batch: the standard deviation over images of each
    part's prediction of each patch value, averaged. Near 0 means one prediction for every image (collapse).

    Args:
        pred: (B, K, N, P).
    Returns:
        a scalar.
    """
    return pred.std(dim=0).mean()
