"""``emae eval segment``: the command's flags (the work is in :mod:`segmentation.train`)."""
from __future__ import annotations

import argparse

from mmengine.config import DictAction

from segmentation.config import config_names
from segmentation.train import segment


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="our pre-training checkpoint, an official MAE "
                        "checkpoint or a timm ViT state dict (.pth or .safetensors)")
    parser.add_argument("--config", required=True, help=f"a preset ({', '.join(config_names())}) or a .py "
                        f"mmengine config file")
    parser.add_argument("--data", required=True, help="dataset root in ADE20K's layout (ADEChallengeData2016, or "
                        "one made by `emae data segmentation`)")
    parser.add_argument("--output-dir", default="runs/segment", help="records.jsonl and one work dir per run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iters", type=int, default=0, help="training iterations (0: the config's)")
    parser.add_argument("--batch-size", type=int, default=0, help="images per process (0: the config's)")
    parser.add_argument("--amp", action="store_true", help="mixed precision (AmpOptimWrapper, dynamic loss scale)")
    parser.add_argument("--launcher", choices=("none", "pytorch", "slurm", "mpi"), default="none",
                        help="mmengine's launcher for several processes (pytorch: under torchrun)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default=None,
                        help="override config keys, mmengine style: key=value (e.g. optim_wrapper.optimizer.lr=2e-4)")
    parser.add_argument("--method", default=None, help="records' method for a checkpoint without our config")
    parser.add_argument("--pretrain-epochs", type=int, default=None, help="records' pre-training epochs, likewise")
    parser.add_argument("--pretrain-data", default=None, help="records' pre-training data, likewise")


def main(args: argparse.Namespace) -> int:
    overrides = {"method": args.method, "pretrain_epochs": args.pretrain_epochs, "pretrain_data": args.pretrain_data}
    segment(args.checkpoint, args.config, args.data, args.output_dir, args.seed, args.iters, args.batch_size,
            args.amp, args.launcher, args.cfg_options, overrides)
    return 0
