"""Fixed 2-D sine-cosine position embeddings, with the same values as the official MAE code."""
from __future__ import annotations

import torch
from torch import Tensor


def sincos_1d(dim: int, positions: Tensor) -> Tensor:
    """(M,) positions -> (M, dim): ``[sin(pos * omega), cos(pos * omega)]``, omega = 1 / 10000^(2i / dim)."""
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_2d(dim: int, grid: tuple[int, int], cls_token: bool = True) -> Tensor:
    """Position embeddings of a (rows, cols) patch grid, row-major; a zero row first for the cls token.

    Returns:
        (1 + rows * cols, dim) if ``cls_token`` else (rows * cols, dim), float32. The first half of
        each vector encodes the column, the second half the row, as in MAE.
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embeddings need a width divisible by 4, got {dim}")
    rows, cols = grid
    col = torch.arange(cols).repeat(rows)
    row = torch.arange(rows).repeat_interleave(cols)
    emb = torch.cat([sincos_1d(dim // 2, col), sincos_1d(dim // 2, row)], dim=1)
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim, dtype=emb.dtype), emb], dim=0)
    return emb.float()
