"""Training and COCO evaluation of a detector through detectron2, and the result records.

A run is planned once (:func:`preflight`: output folder, backbone hand-off, config and data checks) and
then executed by every process (:func:`run`): detectron2's ``SimpleTrainer`` / ``AMPTrainer`` with its
hooks (lr schedule, periodic checkpoints, evaluation, metric writers), ``DetectionCheckpointer`` (resume
from the output folder's ``last_checkpoint``), ``COCOEvaluator`` through ``inference_on_dataset``.

Output folder: ``settings.json`` (the command's settings; a re-run must match them), ``config.yaml``
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
from dataclasses import dataclass, field
from pathlib import Path

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import AMPTrainer, SimpleTrainer, default_setup, default_writers, hooks
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.modeling import ViT
from detectron2.utils import comm
from hydra.errors import HydraException
from omegaconf import OmegaConf

from detection.checkpoint import Backbone, SafeCheckpointer, load_backbone, prepare_backbone
from detection.datasets import check_same_categories, find_split, read_categories, register
from emae.checkpoint import EncoderInfo
from emae.errors import EmaeError
from emae.models import ARCHS
from emae.settings import read_json
from results.datasets import record_dataset
from results.records import RECORDS_FILE, Record, append_records, backbone_fields, provenance, read_records

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
SETTINGS_FILE = "settings.json"
REPORT_FILE = "backbone_load_report.json"
# record metric -> (COCOEvaluator task, its key)
METRICS = {f"AP{t}{k[2:]}": (task, k) for task, t in (("bbox", "b"), ("segm", "m")) for k in ("AP", "AP50", "AP75")}
# settings a re-run may change: how it runs, not what it computes
RESUME_FREE = ("device", "num_gpus")
_MISSING = object()
logger = logging.getLogger("detectron2")


@dataclass(frozen=True)
class DetectSettings:
    """The command's settings, saved as ``settings.json`` in the output folder."""

    checkpoint: str
    config: str  # a name from detection/configs or a path to a LazyConfig .py file
    data: str  # COCO-format root
    output_dir: str
    train_split: str | None = None  # None: the config's benchmark.train_split
    val_split: str | None = None
    opts: list[str] = field(default_factory=list)  # LazyConfig overrides, KEY=VALUE
    device: str = "auto"  # auto, cpu, cuda
    num_gpus: int = 1


@dataclass(frozen=True)
class Plan:
    """What every process of a run needs, checked once by :func:`preflight`."""

    settings: DetectSettings
    backbone: Backbone
    started: float  # time.time() when the command started


def available_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.py") if not p.stem.startswith("_"))


def config_file(name: str) -> Path:
    if name in available_configs():
        return CONFIG_DIR / f"{name}.py"
    if name.endswith(".py") and Path(name).is_file():
        return Path(name)
    raise EmaeError(f"unknown detection config {name!r}; choose one of {available_configs()} or a .py file")


def load_config(name: str, opts: list[str]):
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
        return LazyConfig.apply_overrides(cfg, opts)
    except HydraException as e:
        raise EmaeError(f"--opts {opts}: {e}") from None


def vit_config(cfg):
    """The config node of the model's detectron2 ViT (ViTDet: backbone.net; ViT-FPN: backbone.bottom_up.net)."""
    backbone = cfg.model.backbone
    return backbone.net if "net" in backbone else backbone.bottom_up.net


def check_encoder(info: EncoderInfo, net, config: str, checkpoint: str) -> None:
    """The checkpoint's ViT must be the one the config builds; an error names the differing weight."""
    want = EncoderInfo(**{k: _vit_arg(net, k) for k in ("patch_size", "embed_dim", "depth", "num_heads", "in_chans")},
                       img_size=info.img_size)
    if info == want:
        return
    if _proj_shape(info) != _proj_shape(want):
        raise EmaeError(f"{checkpoint}: 'patch_embed.proj.weight' has shape {_proj_shape(info)} but config "
                        f"{config!r} needs {_proj_shape(want)}: the checkpoint is a {info.embed_dim}-d ViT with "
                        f"{info.patch_size}-px patches and {info.in_chans} input channel(s); choose a config "
                        f"of that size")
    raise EmaeError(f"{checkpoint}: a ViT of {info.depth} blocks with {info.num_heads} heads, but config "
                    f"{config!r} builds {want.depth} blocks with {want.num_heads} heads")


def _vit_arg(net, name: str):
    """An argument of the config's ``ViT``: as set, or the constructor's default."""
    return net[name] if name in net else inspect.signature(ViT).parameters[name].default


def _proj_shape(info: EncoderInfo) -> tuple[int, int, int, int]:
    return info.embed_dim, info.in_chans, info.patch_size, info.patch_size


def build_config(plan: Plan):
    """The run's full detectron2 config (the named config, the overrides, the data, device and backbone) and
    the category names."""
    s = plan.settings
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
    cfg.train.init_checkpoint = str(plan.backbone.path)
    cfg.train.output_dir = s.output_dir
    cfg.train.device = resolve_device(s.device)
    cfg.train.amp.enabled = bool(cfg.train.amp.enabled) and cfg.train.device == "cuda"
    return cfg, classes


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise EmaeError("device 'cuda' asked for, but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise EmaeError(f"device must be auto, cpu or cuda, got {name!r}")
    return name


def check_settings(settings: DetectSettings) -> None:
    """A re-run in a folder that holds a run must compute the same thing (``settings.json``)."""
    path = Path(settings.output_dir) / SETTINGS_FILE
    if not path.is_file():
        return
    saved, current = read_json(path), dataclasses.asdict(settings)
    changed = sorted(k for k in current if k not in RESUME_FREE and saved.get(k) != current[k])
    if changed:
        raise EmaeError(f"{path}: this folder holds a run with other settings ({', '.join(changed)}: "
                        f"{[saved.get(k) for k in changed]}); resume it with the same settings or choose "
                        f"another --output-dir")


def save_settings(settings: DetectSettings) -> None:
    path = Path(settings.output_dir) / SETTINGS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataclasses.asdict(settings), indent=2) + "\n", encoding="utf-8")


def finished_records(output_dir: str | os.PathLike) -> list[Record]:
    """The records of a run that already finished in ``output_dir`` (empty if it did not)."""
    path = Path(output_dir) / RECORDS_FILE
    records = read_records(path) if path.is_file() else []
    return records if {r.metric for r in records} >= set(METRICS) else []


def preflight(settings: DetectSettings) -> Plan | None:
    """Check everything a run needs before any process starts; None when the run already finished."""
    started = time.time()
    out = Path(settings.output_dir)
    check_settings(settings)
    if finished_records(out):
        return None
    plan = Plan(settings, prepare_backbone(settings.checkpoint, out, dry_run=True), started)
    build_config(plan)  # raises on a bad config, data folder or backbone size, before anything is written
    plan = Plan(settings, prepare_backbone(settings.checkpoint, out), started)
    save_settings(settings)
    return plan


def evaluate(cfg, model) -> dict:
    """Box and mask AP of ``model`` on the validation split (COCO's numbers, in percent)."""
    results = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
    if comm.is_main_process():
        print_csv_format(results)
    return results


def run(plan: Plan) -> dict | None:
    """Train and evaluate in this process (one of the run's processes); the main one writes the records."""
    s = plan.settings
    cfg, classes = build_config(plan)
    default_setup(cfg, argparse.Namespace(config_file=str(config_file(s.config)), eval_only=False,
                                          settings=dataclasses.asdict(s)))
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
    records = write_records(plan, cfg, latest, start_iter)
    return {r.metric: r.value for r in records}


def write_records(plan: Plan, cfg, results: dict, start_iter: int) -> list[Record]:
    """One record per metric of :data:`METRICS`, appended to the output folder's records file at once."""
    s, info = plan.settings, plan.backbone.info
    missing = [m for m, (task, key) in METRICS.items() if key not in results.get(task, {})]
    if missing:
        raise EmaeError(f"the evaluation produced no {missing} (results: {sorted(results)})")
    fields = backbone_fields(plan.backbone.pretrain_config, arch_name(info))
    config = dict(dataclasses.asdict(s), detectron2_config=str(Path(s.output_dir) / "config.yaml"))
    common = provenance(config, s.checkpoint, time.time() - plan.started)
    extra = {"config": s.config, "iterations": int(cfg.train.max_iter), "resumed_from_iter": start_iter,
             "batch_size": int(cfg.dataloader.train.total_batch_size), "output_dir": s.output_dir,
             "pretrain_img_size": info.img_size}
    dataset = record_dataset(s.data, cfg.benchmark.val_split, cfg.benchmark.get("dataset_name"))
    records = [Record(**fields, protocol=cfg.benchmark.protocol, metric=metric, value=float(results[task][key]),
                      dataset=dataset, seed=int(cfg.train.seed), extra=extra, **common)
               for metric, (task, key) in METRICS.items()]
    append_records(Path(s.output_dir) / RECORDS_FILE, records)
    not_finite = [r.metric for r in records if not math.isfinite(r.value)]
    if not_finite:
        logger.warning(f"no detections to score: {not_finite} are NaN")
    return records


def arch_name(info: EncoderInfo) -> str:
    """The registered architecture of an encoder's shape, or a descriptive name for an unregistered one."""
    for name, arch in ARCHS.items():
        if (arch.patch_size, arch.embed_dim, arch.depth, arch.num_heads) == (
                info.patch_size, info.embed_dim, info.depth, info.num_heads):
            return name
    return f"vit_{info.embed_dim}d_{info.depth}x_patch{info.patch_size}"
