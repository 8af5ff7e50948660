"""Named read-outs of a ViT's frozen tokens, as DINOv2's linear evaluation offers them (:data:`READOUTS`): ``cls``
(the cls token), ``avg`` (the average of the patch tokens) or both concatenated (``cls+avg``), of the last block
(``-last``) or averaged over the last four (``-last4``). :class:`BlockReadouts` reads the tokens of each of the
last blocks; :func:`readout_bases` lays them out as one matrix whose column ranges are the read-outs.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

LAST_BLOCKS = 4  # the blocks whose read-outs are cached; the "-last4" read-outs average them
TOKENS = ("cls", "avg", "cls+avg")
READOUTS = tuple(f"{token}-{blocks}" for blocks in ("last", f"last{LAST_BLOCKS}") for token in TOKENS)


class BlockReadouts(nn.Module):
    """The read-outs of a timm ViT's last ``blocks`` blocks: images (B, C, H, W) -> (B, blocks, 2, D), for each
    block (oldest first) its cls token ``[..., 0, :]`` and the average of its patch tokens ``[..., 1, :]``.

    Each block is read as the model reads its last one: its tokens through the model's final ``norm`` (the
    pre-trained one for ``global_pool`` token, none for avg, as timm builds them), the average then through
    ``fc_norm`` (parameter-free for avg, none for token); so ``[:, -1, 0]`` (token) or ``[:, -1, 1]`` (avg) is
    the model's own output.
    """

    def __init__(self, model: nn.Module, blocks: int):
        super().__init__()
        self.model, self.blocks = model, blocks

    def forward(self, x: Tensor) -> Tensor:
        outputs = self.model.forward_intermediates(x, indices=self.blocks, return_prefix_tokens=True, norm=True,
                                                   output_fmt="NLC", intermediates_only=True)
        return torch.stack([torch.stack([prefix[:, 0], self.model.fc_norm(patches.mean(1))], dim=1)
                            for patches, prefix in outputs], dim=1)


def pool_readout(global_pool: str) -> str:
    """The read-out a model built for ``global_pool`` gives as its output: its last block's cls token (token) or
    patch-token average (avg)."""
    return "cls-last" if global_pool == "token" else "avg-last"


def readout_bases(blocks: Tensor) -> tuple[Tensor, dict[str, tuple[int, int]]]:
    """The read-outs of (N, L, 2, D) block features (:class:`BlockReadouts`) as one (N, 4D) matrix: the cls
    token and the patch-token average of the last block, then both averaged over the L blocks (the first two
    alone where L is 1); and each named read-out's columns ``[start, stop)`` of it (``cls+avg``: two
    neighbouring ranges)."""
    dim, count = blocks.shape[-1], blocks.shape[1]
    parts = [blocks[:, -1, 0], blocks[:, -1, 1]]
    spans = {"cls-last": (0, dim), "avg-last": (dim, 2 * dim), "cls+avg-last": (0, 2 * dim)}
    if count > 1:
        parts += [blocks[:, :, 0].mean(1), blocks[:, :, 1].mean(1)]
        spans.update({f"cls-last{count}": (2 * dim, 3 * dim), f"avg-last{count}": (3 * dim, 4 * dim),
                      f"cls+avg-last{count}": (2 * dim, 4 * dim)})
    return torch.cat(parts, dim=1), spans
