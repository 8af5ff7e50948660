"""Pre-training methods by name: the mask strategy and the loss weights that define each, and the objective
they weight.

``mae`` and ``emae`` are the paper's two methods; the others are the ablations of Tables X and XI.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor

from emae.errors import EmaeError
from emae.losses import pixel_loss, prediction_spread, self_consistency_loss


@dataclass(frozen=True)
class Method:
    masking: str  # a strategy of emae.masking.make_part_masks
    pixel_weight: float
    consistency_weight: float
    description: str


METHODS: dict[str, Method] = {
    "mae": Method("random", 1.0, 0.0, "MAE: one random mask per image, pixel loss (Table X a)"),
    "random-k": Method("random-k", 1.0, 0.0, "K independent random masks, pixel loss (Table X b)"),
    "parallel": Method("parallel", 1.0, 0.0, "parallel mask, pixel loss only (Table X c, XI a)"),
    "complementary": Method("complementary", 1.0, 0.0, "a view and its complement, pixel loss (Table X d)"),
    "consistency": Method("parallel", 0.0, 1.0, "parallel mask, self-consistency loss only (Table XI b)"),
    "emae": Method("parallel", 1.0, 1.0, "EMAE: parallel mask, pixel + self-consistency loss (Table XI c)"),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise EmaeError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name]


def objective(pred: Tensor, target: Tensor, mask: Tensor, pixel_weight: float,
              consistency_weight: float) -> tuple[Tensor, dict[str, Tensor]]:
    """The pre-training loss ``pixel_weight * pixel_loss + consistency_weight * self_consistency_loss`` and its
    detached terms (``pixel_loss``, ``consistency_loss``, ``prediction_spread``). A term of weight 0 is still
    computed, for the log, but without grad.

    Args:
        pred: (B, K, N, P) predictions of the K parts (float32).
        target: (B, N, P) pixel targets (:func:`emae.losses.pixel_targets`).
        mask: (B, K, N), 1 = masked in that part.
    """
    with nullcontext() if pixel_weight else torch.no_grad():
        pix = pixel_loss(pred, target, mask)
    with nullcontext() if consistency_weight else torch.no_grad():
        cons = self_consistency_loss(pred, mask)
    loss = pixel_weight * pix + consistency_weight * cons
    return loss, {"pixel_loss": pix.detach(), "consistency_loss": cons.detach(),
                  "prediction_spread": prediction_spread(pred.detach())}
