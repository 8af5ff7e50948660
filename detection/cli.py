"""``emae eval detect``: fine-tune a pre-trained ViT as a detector on a COCO-format dataset and record its AP.

One process: ``emae eval detect ...``. Several GPUs of one machine: ``--num-gpus N`` (detectron2's
``launch``), or ``torchrun --nproc-per-node N -m emae eval detect ...``. Re-running the same command in the
same ``--output-dir`` resumes from the last checkpoint; a finished run is not repeated and its records are
not written twice.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os

from detectron2.engine import launch
from detectron2.utils import comm

from detection.train import DetectConfig, Plan, available_configs, finished_records, preflight, run
from emae import settings
from emae.distributed import init_distributed
from emae.errors import EmaeError
from emae.settings import pick_device

HELP = {
    "checkpoint": "our pre-training checkpoint, an official MAE or timm checkpoint, or a .pth written by 'emae "
                  "export --to detectron2' (required)",
    "config": f"the detectron2 LazyConfig: one of {available_configs()} or a LazyConfig .py file (required; a "
              f"YAML or JSON file of this command's settings is --config-file)",
    "data": "COCO-format root: <split>/ images and annotations/instances_<split>.json (required)",
    "output_dir": "checkpoints, logs, config.json, config.yaml and records.jsonl (default: runs/detect)",
    "train_split": "training split (default: the config's, e.g. train2017)",
    "val_split": "validation split (default: the config's, e.g. val2017)",
    "opts": "LazyConfig overrides KEY=VALUE, e.g. train.max_iter=1000 dataloader.train.total_batch_size=16",
    "device": "auto, cpu or cuda (default: auto)",
    "num_gpus": "processes to launch, one per GPU (default: 1)",
    "dist_timeout": "seconds a collective may wait for a peer under torchrun (default: 1800)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`DetectConfig` field; ``--config NAME`` is the field ``config`` (the LazyConfig),
    so the settings file that other commands take as ``--config FILE`` is ``--config-file FILE`` here."""
    settings.add_arguments(parser, DetectConfig, HELP, file_flag="--config-file")


def resolve_config(args: argparse.Namespace) -> DetectConfig:
    """defaults < ``--config-file`` < explicit flags, validated; the checkpoint, data and output paths made
    absolute (as the records keep them)."""
    config = DetectConfig.from_dict(settings.resolve(DetectConfig, args)).validate()
    return dataclasses.replace(config, checkpoint=os.path.abspath(config.checkpoint),
                               data=os.path.abspath(config.data), output_dir=os.path.abspath(config.output_dir))


def main(args: argparse.Namespace) -> int:
    config = resolve_config(args)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return _main_torchrun(config)
    if config.num_gpus > 1 and pick_device(config.device).type != "cuda":
        raise EmaeError(f"--num-gpus {config.num_gpus} launches one process per GPU, but the device is not CUDA")
    plan = preflight(config)
    if plan.done:
        return _already_finished(plan)
    if config.num_gpus == 1:
        _print(run(plan))
    else:
        launch(run, config.num_gpus, dist_url="auto", args=(plan,))
        _print({r.metric: r.value for r in finished_records(config, plan.checkpoint_sha256)})
    return 0


def _main_torchrun(config: DetectConfig) -> int:
    """One of ``torchrun``'s processes: the main one plans, every one trains."""
    info = init_distributed(pick_device(config.device).type, config.dist_timeout)
    comm.create_local_process_group(int(os.environ["LOCAL_WORLD_SIZE"]))
    plan, error = None, None
    if info.is_main:
        try:
            plan = preflight(config)
        except EmaeError as e:
            error = str(e)
    plan, error = comm.all_gather((plan, error))[0]  # every process learns the plan, or the main one's error
    if error:
        raise EmaeError(error)
    if plan.done:
        return _already_finished(plan) if info.is_main else 0
    results = run(plan)
    if info.is_main:
        _print(results)
    return 0


def _already_finished(plan: Plan) -> int:
    print(f"{plan.config.output_dir}: this run has finished; its records:")
    _print({r.metric: r.value for r in plan.done})
    return 0


def _print(results: dict) -> None:
    print(json.dumps(results, indent=2))
