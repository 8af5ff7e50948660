"""``emae eval segment``: the command's flags and config (the work is in :mod:`segmentation.train`)."""
from __future__ import annotations

import argparse

from emae import settings
from segmentation.config import config_names
from segmentation.train import LAUNCHERS, SegmentConfig, segment

HELP = {
    "checkpoint": "our pre-training checkpoint, an official MAE checkpoint or a timm ViT state dict (.pth or "
                  ".safetensors) (required)",
    "config": f"the mmseg config: a preset ({', '.join(config_names())}) or a .py mmengine config file (required; "
              f"a YAML or JSON file of this command's settings is --config-file)",
    "data": "dataset root in ADE20K's layout (ADEChallengeData2016, or one made by `emae data segmentation`) "
            "(required)",
    "output_dir": "records.jsonl and one work dir per run (default: runs/segment)",
    "seed": "(default: 0)",
    "iters": "training iterations (default 0: the config's)",
    "batch_size": "images per process (default 0: the config's)",
    "amp": "mixed precision (AmpOptimWrapper, dynamic loss scale; default: off)",
    "launcher": f"mmengine's launcher for several processes: one of {', '.join(LAUNCHERS)} (default: none; "
                f"pytorch: under torchrun)",
    "cfg_options": "override config keys, mmengine style: KEY=VALUE (e.g. optim_wrapper.optimizer.lr=2e-4)",
    "method": "records' method for a checkpoint without our config",
    "pretrain_epochs": "records' pre-training epochs, likewise",
    "pretrain_data": "records' pre-training data, likewise",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`SegmentConfig` field; ``--config NAME`` is the field ``config`` (the mmseg config),
    so the settings file that other commands take as ``--config FILE`` is ``--config-file FILE`` here."""
    settings.add_arguments(parser, SegmentConfig, HELP, file_flag="--config-file")


def resolve_config(args: argparse.Namespace) -> SegmentConfig:
    """defaults < ``--config-file`` < explicit flags, validated."""
    return SegmentConfig.from_dict(settings.resolve(SegmentConfig, args)).validate()


def main(args: argparse.Namespace) -> int:
    segment(resolve_config(args))
    return 0
