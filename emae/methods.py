"""Pre-training methods by name: the mask strategy and the loss weights that define each.

``mae`` and ``emae`` are the paper's two methods; the others are the ablations of Tables X and XI.
"""
from __future__ import annotations

from dataclasses import dataclass

from emae.errors import EmaeError


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
