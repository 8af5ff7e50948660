"""Training and COCO evaluation of a detector through detectron2, and the result records.

A run is planned once (:func:`preflight`: output folder, backbone hand-off, config and data checks) and
then executed by every process (:func:`run`): detectron2's ``SimpleTrainer`` / ``AMPTrainer`` with its
hooks (lr schedule, periodic checkpoints, evaluation, metric writers, :mod:`emae.progress` reports),
``DetectionCheckpointer`` (resume from the output folder's ``last_checkpoint``), ``COCOEvaluator`` through
``inference_on_dataset``.

Output folder: ``config.json`` (the command's :class:`DetectConfig`; a re-run must match it, and so must the
``settings.json`` of a run begun by an older version), ``config.yaml``
(detectron2's full config), ``backbone_load_report.json``, ``backbone_detectron2.pth`` (when the
checkpoint needed converting), ``model_*.pth`` / ``last_checkpoint``, ``metrics.json`` and TensorBoard
events, ``inference/`` (COCO predictions), ``log.txt`` and ``records.jsonl`` (APb, APb50, APb75, APm,
APm50, APm75 of the final model, written once).
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import logging
import math
import os
import time
import typing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from detectron2.config import LazyConfig, instantiate
from detectron2.engine import AMPTrainer, HookBase, SimpleTrainer, default_setup, default_writers, hooks
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators, inference_on_dataset, print_csv_format
from detectron2.modeling import ViT
from detectron2.utils import comm
from hydra.errors import HydraException
from omegaconf import OmegaConf
from torch import nn

from detection.checkpoint import Backbone, SafeCheckpointer, load_backbone, read_backbone, write_backbone
from detection.datasets import check_same_categories, find_split, read_categories, register
from emae import progress, records, settings
from emae.checkpoint import NORM_EPS, SHAPE_WORDS, EncoderInfo, check_shape
from emae.errors import EmaeError
from emae.records import (
    RECORDS_FILE,
    Record,
    backbone_fields,
    check_rerun,
    provenance,
    record_dataset,
    sha256_file,
    variant_settings,
    write_records,
)
from emae.settings import CONFIG_FILE, pick_device

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
LEGACY_CONFIG_FILE = "settings.json"  # what a run begun by an older version saved instead
REPORT_FILE = "backbone_load_report.json"
# record metric -> (COCOEvaluator task, its key)
METRICS = {f"AP{t}{k[2:]}": (task, k) for task, t in (("bbox", "b"), ("segm", "m")) for k in ("AP", "AP50", "AP75")}
_MISSING = object()
logger = logging.getLogger("detectron2")


@dataclass(frozen=True)
class DetectConfig(settings.CommandConfig):
    """``emae eval detect``'s config: defaults < ``--config-file`` (YAML or JSON) < flags (:mod:`emae.settings`),
    saved as ``config.json`` in the output folder. ``config`` names the detectron2 LazyConfig."""

    checkpoint: str = ""
    config: str = ""  # a name from detection/configs or a path to a LazyConfig .py file
    data: str = ""  # COCO-format root
    output_dir: str = "runs/detect"
    train_split: str | None = None  # None: the config's benchmark.train_split
    val_split: str | None = None
    opts: tuple[str, ...] = ()  # LazyConfig overrides, KEY=VALUE
    device: str = "auto"  # auto, cpu, cuda
    num_gpus: int = 1  # processes to launch (detectron2's launch), one per GPU; ignored under torchrun
    dist_timeout: int = 1800  # under torchrun: seconds a collective may wait for a peer

    def validate(self) -> "DetectConfig":
        settings.require(self, ("checkpoint", "config", "data"), "--config-file")
        if self.num_gpus < 1:
            raise EmaeError(f"--num-gpus must be >= 1, got {self.num_gpus}")
        return self




@dataclass(frozen=True)
class Plan:
    """What every process of a run needs, checked once by :func:`preflight`."""

    config: DetectConfig
    backbone: Backbone | None  # None when the run already finished
    started: float  # time.time() when the command started
    checkpoint_sha256: str
    done: list[Record] = field(default_factory=list)  # the records of a run that already finished


def available_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.py") if not p.stem.startswith("_"))


def config_file(name: str) -> Path:
    if name in available_configs():
        return CONFIG_DIR / f"{name}.py"
    if name.endswith(".py") and Path(name).is_file():
        return Path(name)
    raise EmaeError(f"unknown detection config {name!r}; choose one of {available_configs()} or a .py file")


def load_config(name: str, opts: typing.Sequence[str]):
    """A LazyConfig with ``opts`` (``KEY=VALUE``, keys that exist) applied."""
    path = config_file(name)
    try:
        cfg = LazyConfig.load(str(path))
    except Exception as e:  # the file is Python that detectron2 runs: any error in it is the config's
        cause = e.__cause__ or e.__context__ if "syntax error" in str(e) else e
        detail = (f"{cause.msg} (line {cause.lineno})" if isinstance(cause, SyntaxError) and cause.lineno
                  else f"{type(e).__name__}: {' '.join(str(e).split())}")
        raise EmaeError(f"{path}: not a readable LazyConfig: {detail}") from None
    for key in ("model", "dataloader", "optimizer", "lr_multiplier", "train", "benchmark"):
        if key not in cfg:
            raise EmaeError(f"{path}: not a detection config of this suite: it defines no '{key}'")
    for opt in opts:
        key = opt.split("=", 1)[0]
        if "=" not in opt or OmegaConf.select(cfg, key, default=_MISSING) is _MISSING:
            raise EmaeError(f"--opts {opt!r}: expected KEY=VALUE with a KEY of the config")
    try:
        return LazyConfig.apply_overrides(cfg, list(opts))
    except HydraException as e:
        raise EmaeError(f"--opts {list(opts)}: {e}") from None


def vit_config(cfg):
    """The config node of the model's detectron2 ViT (ViTDet: backbone.net; ViT-FPN: backbone.bottom_up.net)."""
    backbone = cfg.model.backbone
    return backbone.net if "net" in backbone else backbone.bottom_up.net


def check_encoder(info: EncoderInfo, net, config: str, checkpoint: str) -> None:
    """The checkpoint's ViT must be the one the config builds (:func:`emae.checkpoint.check_shape`)."""
    check_shape(info, {k: _vit_arg(net, k) for k in SHAPE_WORDS}, checkpoint, f"detection config {config!r}")


def _vit_arg(net, name: str):
    """An argument of the config's ``ViT``: as set, or the constructor's default."""
    return net[name] if name in net else inspect.signature(ViT).parameters[name].default


def build_config(plan: Plan):
    """The run's full detectron2 config (the named config, the overrides, the data, device and backbone) and
    the category names."""
    s = plan.config
    cfg = load_config(s.config, s.opts)
    cfg.benchmark.train_split = s.train_split or cfg.benchmark.train_split
    cfg.benchmark.val_split = s.val_split or cfg.benchmark.val_split
    train_split = find_split(s.data, cfg.benchmark.train_split)
    val_split = find_split(s.data, cfg.benchmark.val_split)
    classes = read_categories(val_split.json_file)
    cfg.dataloader.train.dataset.names = register(train_split)
    cfg.dataloader.test.dataset.names = register(val_split)
    cfg.dataloader.evaluator.output_dir = os.path.join(s.output_dir, "inference")
    cfg.model.roi_heads.num_classes = len(classes)

    net = vit_config(cfg)
    check_encoder(plan.backbone.info, net, s.config, s.checkpoint)
    net.pretrain_img_size = plan.backbone.info.img_size  # the grid its position embedding was trained on
    if plan.backbone.info.norm_eps != NORM_EPS:  # a Hugging Face ViT's LayerNorms (1e-12), not the config's 1e-6
        net.norm_layer = partial(nn.LayerNorm, eps=plan.backbone.info.norm_eps)
    cfg.train.init_checkpoint = str(plan.backbone.path)
    cfg.train.output_dir = s.output_dir
    cfg.train.device = pick_device(s.device).type
    cfg.train.amp.enabled = bool(cfg.train.amp.enabled) and cfg.train.device == "cuda"
    return cfg, classes


def check_config(config: DetectConfig) -> None:
    """A re-run in a folder that holds a run must compute the same thing: every config saved there (its
    ``settings.json`` from an older version, its ``config.json``) may differ from ``config`` only in
    :data:`emae.records.RUN_FIELDS` (device, num_gpus, ...); otherwise the error names the fields."""
    for name in (LEGACY_CONFIG_FILE, CONFIG_FILE):
        check_rerun(Path(config.output_dir) / name, config.to_dict())


def record_config(config: DetectConfig) -> dict:
    """The config of the run's records: the command's config and where detectron2's full config is. Without
    ``dist_timeout``, which the records of older versions do not have either (it changes no result)."""
    values = config.to_dict()
    del values["dist_timeout"]
    return dict(values, detectron2_config=str(Path(config.output_dir) / "config.yaml"))


def finished_records(config: DetectConfig, checkpoint_sha256: str) -> list[Record]:
    """The records of a run of this config that already finished in its output folder (empty if none)."""
    return records.finished_records(Path(config.output_dir) / RECORDS_FILE, record_config(config),
                                    checkpoint_sha256, metrics=METRICS)


def preflight(config: DetectConfig) -> Plan:
    """Check everything a run needs before any process starts; ``plan.done`` holds the records of a run
    that already finished."""
    started = time.time()
    out = Path(config.output_dir)
    check_config(config)
    sha = sha256_file(config.checkpoint) if Path(config.checkpoint).exists() else ""
    done = finished_records(config, sha) if sha else []
    if done:
        return Plan(config, None, started, sha, done)
    plan = Plan(config, read_backbone(config.checkpoint, out), started, sha)
    build_config(plan)  # raises on a bad config, data folder or backbone size, before anything is written
    plan = dataclasses.replace(plan, backbone=write_backbone(plan.backbone))
    config.save(config.output_dir)
    return plan


class TrainProgress(HookBase):
    """Reports each finished iteration to :mod:`emae.progress` (phase ``train``)."""

    def after_step(self) -> None:
        progress.report(self.trainer.iter + 1, self.trainer.max_iter, "iters", "train")


class EvalProgress(DatasetEvaluator):
    """Reports each evaluated batch of the validation loader to :mod:`emae.progress` (phase ``eval``)."""

    def __init__(self, batches: int):
        self.batches = batches
        self.done = 0

    def reset(self) -> None:
        self.done = 0
        progress.report(0, self.batches, "batches", "eval")

    def process(self, inputs, outputs) -> None:
        self.done += 1
        progress.report(self.done, self.batches, "batches", "eval")

    def evaluate(self) -> None:
        return None


def evaluate(cfg, model) -> dict:
    """Box and mask AP of ``model`` on the validation split (COCO's numbers, in percent)."""
    loader = instantiate(cfg.dataloader.test)
    evaluators = [instantiate(cfg.dataloader.evaluator)]
    if comm.is_main_process():
        evaluators.append(EvalProgress(len(loader)))
    results = inference_on_dataset(model, loader, DatasetEvaluators(evaluators))
    if comm.is_main_process():
        print_csv_format(results)
    return results


def run(plan: Plan) -> dict | None:
    """Train and evaluate in this process (one of the run's processes); the main one writes the records."""
    s = plan.config
    cfg, classes = build_config(plan)
    default_setup(cfg, argparse.Namespace(config_file=str(config_file(s.config)), eval_only=False,
                                          settings=s.to_dict()))
    model = instantiate(cfg.model).to(cfg.train.device)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)
    check_same_categories(cfg.dataloader.train.dataset.names, classes)

    model = create_ddp_model(model, **cfg.train.ddp)
    trainer = (AMPTrainer if cfg.train.amp.enabled else SimpleTrainer)(model, train_loader, optimizer)
    checkpointer = SafeCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    latest: dict = {}  # the last evaluation's results

    def evaluate_and_keep() -> dict:
        latest.clear()
        latest.update(evaluate(cfg, model))
        return latest

    trainer.register_hooks([
        hooks.IterationTimer(),
        TrainProgress() if comm.is_main_process() else None,
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if comm.is_main_process() else None,
        hooks.EvalHook(cfg.train.eval_period, evaluate_and_keep),
        hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter), period=cfg.train.log_period)
        if comm.is_main_process() else None,
    ])

    if checkpointer.has_checkpoint():
        checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=True)
        start_iter = trainer.iter + 1
        logger.info(f"resuming from iteration {start_iter}")
    else:
        report = load_backbone(checkpointer, plan.backbone)
        logger.info(f"backbone: {report['loaded']} ViT tensors loaded from {report['file']}; untrained in the ViT: "
                    f"{len(report['missing_in_vit'])}; detector weights from scratch: {report['missing_outside_vit']}")
        if comm.is_main_process():
            Path(cfg.train.output_dir, REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        start_iter = 0
    trainer.train(start_iter, cfg.train.max_iter)
    if not comm.is_main_process():
        return None
    written = write_run_records(plan, cfg, latest, start_iter)
    return {r.metric: r.value for r in written}


def write_run_records(plan: Plan, cfg, results: dict, start_iter: int) -> list[Record]:
    """One record per metric of :data:`METRICS`, appended to the output folder's records file at once."""
    s, info = plan.config, plan.backbone.info
    missing = [m for m, (task, key) in METRICS.items() if key not in results.get(task, {})]
    if missing:
        raise EmaeError(f"the evaluation produced no {missing} (results: {sorted(results)})")
    fields = backbone_fields(plan.backbone.pretrain_config, plan.backbone.arch)
    common = provenance(record_config(s), s.checkpoint, time.time() - plan.started, plan.checkpoint_sha256)
    extra = {"config": s.config, "iterations": int(cfg.train.max_iter), "resumed_from_iter": start_iter,
             "batch_size": int(cfg.dataloader.train.total_batch_size), "output_dir": s.output_dir,
             "pretrain_img_size": info.img_size, **variant_settings(plan.backbone.pretrain_config)}
    dataset = record_dataset(s.data, cfg.benchmark.val_split, cfg.benchmark.get("dataset_name"))
    records = [Record(**fields, protocol=cfg.benchmark.protocol, metric=metric, value=float(results[task][key]),
                      dataset=dataset, seed=int(cfg.train.seed), extra=extra, **common)
               for metric, (task, key) in METRICS.items()]
    write_records(Path(s.output_dir) / RECORDS_FILE, records, echo=False)
    not_finite = [r.metric for r in records if not math.isfinite(r.value)]
    if not_finite:
        logger.warning(f"no detections to score: {not_finite} are NaN")
    return records

