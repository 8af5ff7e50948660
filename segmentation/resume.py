"""Resumable mmengine checkpoints that ``torch.load(weights_only=True)`` reads.

mmengine reads checkpoints with ``torch.load``'s default, which is ``weights_only=True`` in this torch: no
code runs while loading. mmengine's own checkpoints do not pass that check: the message hub keeps its
logged scalars in ``HistoryBuffer`` objects, whose pickles name bound methods (``getattr``) and numpy
arrays, and its runtime info holds numpy scalars. :class:`PlainCheckpointState` writes that state as
tensors and Python numbers instead, and rebuilds the ``HistoryBuffer`` objects after a load, before the
Runner restores its message hub, so that a killed run resumes from its work dir without unpickling code.
"""
from __future__ import annotations

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer

BUFFER_TAG = "__history_buffer__"


def _plain(value):
    """numpy scalars and arrays as Python numbers and tensors, inside containers too."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


class PlainCheckpointState(Hook):
    """Stores the message hub's state without pickled objects, and restores it on load."""

    priority = "VERY_LOW"  # after every other hook has added to the checkpoint

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        hub = checkpoint["message_hub"]
        hub["log_scalars"] = {
            key: {BUFFER_TAG: True, "log": torch.from_numpy(np.asarray(buf.data[0])),
                  "count": torch.from_numpy(np.asarray(buf.data[1])), "max_length": buf.max_length}
            for key, buf in hub["log_scalars"].items()}
        checkpoint["message_hub"] = _plain(hub)
        checkpoint["meta"] = _plain(checkpoint["meta"])

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        scalars = checkpoint.get("message_hub", {}).get("log_scalars", {})
        for key, value in scalars.items():
            if isinstance(value, dict) and value.get(BUFFER_TAG):
                scalars[key] = HistoryBuffer(value["log"].numpy(), value["count"].numpy(), value["max_length"])
