"""``emae eval detect``: fine-tune a pre-trained ViT as a detector on a COCO-format dataset and record its AP.

One process: ``emae eval detect ...``. Several GPUs of one machine: ``--num-gpus N`` (detectron2's
``launch``), or ``torchrun --nproc-per-node N -m emae eval detect ...``. Re-running the same command in the
same ``--output-dir`` resumes from the last checkpoint; a finished run is not repeated and its records are
not written twice.
"""
from __future__ import annotations

import argparse
import json
import os

from detectron2.engine import launch
from detectron2.utils import comm

from detection.train import DetectSettings, available_configs, finished_records, preflight, resolve_device, run
from emae.distributed import init_distributed
from emae.errors import EmaeError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="our pre-training checkpoint, an official MAE or timm "
                        "checkpoint, or a .pth written by 'emae export --to detectron2'")
    parser.add_argument("--config", required=True, help=f"one of {available_configs()} or a LazyConfig .py file")
    parser.add_argument("--data", required=True, help="COCO-format root: <split>/ images and "
                        "annotations/instances_<split>.json")
    parser.add_argument("--output-dir", default="runs/detect", help="checkpoints, logs, config and records.jsonl")
    parser.add_argument("--train-split", help="training split (default: the config's, e.g. train2017)")
    parser.add_argument("--val-split", help="validation split (default: the config's, e.g. val2017)")
    parser.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. train.max_iter=1000 dataloader.train.total_batch_size=16")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--num-gpus", type=int, default=1, help="processes to launch, one per GPU")
    parser.add_argument("--dist-timeout", type=int, default=1800,
                        help="seconds a collective may wait for a peer under torchrun")


def main(args: argparse.Namespace) -> int:
    settings = DetectSettings(checkpoint=os.path.abspath(args.checkpoint), config=args.config,
                              data=os.path.abspath(args.data), output_dir=os.path.abspath(args.output_dir),
                              train_split=args.train_split, val_split=args.val_split, opts=list(args.opts),
                              device=args.device, num_gpus=args.num_gpus)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return _main_torchrun(settings, args.dist_timeout)
    if settings.num_gpus < 1:
        raise EmaeError(f"--num-gpus must be >= 1, got {settings.num_gpus}")
    if settings.num_gpus > 1 and resolve_device(settings.device) != "cuda":
        raise EmaeError(f"--num-gpus {settings.num_gpus} launches one process per GPU, but the device is not CUDA")
    plan = preflight(settings)
    if plan is None:
        return _already_finished(settings)
    if settings.num_gpus == 1:
        _print(run(plan))
    else:
        launch(run, settings.num_gpus, dist_url="auto", args=(plan,))
        _print({r.metric: r.value for r in finished_records(settings.output_dir)})
    return 0


def _main_torchrun(settings: DetectSettings, timeout_s: int) -> int:
    """One of ``torchrun``'s processes: the main one plans, every one trains."""
    info = init_distributed(resolve_device(settings.device), timeout_s)
    comm.create_local_process_group(int(os.environ["LOCAL_WORLD_SIZE"]))
    plan, error = None, None
    if info.is_main:
        try:
            plan = preflight(settings)
        except EmaeError as e:
            error = str(e)
    plan, error = comm.all_gather((plan, error))[0]  # every process learns the plan, or the main one's error
    if error:
        raise EmaeError(error)
    if plan is None:
        return _already_finished(settings) if info.is_main else 0
    results = run(plan)
    if info.is_main:
        _print(results)
    return 0


def _already_finished(settings: DetectSettings) -> int:
    print(f"{settings.output_dir}: this run has finished; its records:")
    _print({r.metric: r.value for r in finished_records(settings.output_dir)})
    return 0


def _print(results: dict) -> None:
    print(json.dumps(results, indent=2))
