"""Gradient steps with accumulation: the update rule both training loops use (pre-training in
:mod:`emae.engine`, the linear probe and fine-tuning in ``evaluation.training``).

A loop feeds batches ``it = 0, 1, ...``; ``accum`` consecutive batches make one update. Each batch's loss is
scaled by ``1 / accum`` (and by the ``GradScaler`` under fp16) before its backward; under DDP the gradient
all-reduce is skipped (``no_sync``) for every batch but the last of an update. The update clips the
gradient norm when asked, steps the optimiser through the scaler and zeroes the gradients. A loss that is
NaN or infinite stops the run before its backward, so the last checkpoint stays the last good one.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from emae.errors import EmaeError


def accumulation_steps(effective_batch: int, batch_size: int, world_size: int) -> int:
    """Batches per optimizer step so that ``batch_size x processes x steps == effective_batch``."""
    per_step = batch_size * world_size
    effective = effective_batch or per_step
    if effective % per_step:
        raise EmaeError(f"effective_batch={effective} is not a multiple of batch_size x processes = "
                        f"{batch_size} x {world_size}")
    return effective // per_step


class NonFiniteLossError(EmaeError):
    """The loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


@dataclass
class GradientSteps:
    """Accumulation, ``no_sync``, loss scaling, clipping and the non-finite check of one training loop.

    ``model`` is the module the forward pass runs through (DDP-wrapped where distributed); its parameters
    are the ones clipped.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    device_type: str
    amp_dtype: torch.dtype | None = None
    accum: int = 1
    clip_grad: float = 0.0

    def __post_init__(self):
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=self.amp_dtype == torch.float16)

    def completes(self, it: int) -> bool:
        """Whether batch ``it`` is the last of an update."""
        return (it + 1) % self.accum == 0

    def accumulating(self, it: int):
        """The context of batch ``it``'s forward and backward: DDP's ``no_sync`` unless the batch completes an
        update (or the model is not DDP-wrapped)."""
        no_sync = getattr(self.model, "no_sync", None)
        return nullcontext() if self.completes(it) or no_sync is None else no_sync()

    def backward(self, loss: Tensor, where: Callable[[], str]) -> float:
        """Back-propagate ``loss / accum`` (scaled); returns the loss's value. For a NaN or infinite loss,
        :class:`NonFiniteLossError` is raised before any gradient is touched, its message ended by ``where()``
        (``at step 7 ...``)."""
        value = loss.item()
        if not math.isfinite(value):
            raise NonFiniteLossError(f"non-finite loss {value} {where()}")
        self.scaler.scale(loss / self.accum).backward()
        return value

    def update(self) -> None:
        """Clip (``clip_grad`` > 0), step the optimiser through the scaler, zero the gradients."""
        if self.clip_grad:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
