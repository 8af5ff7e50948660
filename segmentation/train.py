"""``emae eval segment``: UperNet on a pre-trained ViT, trained and evaluated by mmengine's Runner.

A run:

1. builds the mmengine config (:mod:`segmentation.config`) from the command's :class:`SegmentConfig` and
   names its folder ``OUTPUT_DIR/CONFIG-RUNID``, where RUNID hashes the checkpoint and the mmengine config, so
   a re-run of the same command finds its own folder: mmengine resumes there from the last checkpoint
   (``resume=True``), and a run whose records are already in ``OUTPUT_DIR/records.jsonl`` is not repeated.
   The folder keeps the command's config as ``config.json``; a re-run whose config differs from it outside
   :data:`emae.records.RUN_FIELDS` (another ``--method`` for the records, say) is refused;
2. exports the checkpoint's encoder for mmseg into that folder (:mod:`segmentation.backbone`) and checks
   that mmseg's ``Pretrained`` load of it leaves only the expected keys missing;
3. trains (``Runner.train``), evaluates the final model on the validation split with mmseg's
   ``IoUMetric`` (``Runner.test``), reporting both to :mod:`emae.progress` (:class:`Progress`), and appends
   one record per metric (mIoU, mAcc, aAcc; percent).

Several processes (one per GPU) are mmengine's launcher: ``torchrun --nproc-per-node N -m emae eval segment
... --launcher pytorch``; the first process writes the records.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from segmentation.mmcv_ops import install as install_mmcv_ops

install_mmcv_ops()  # mmseg imports mmcv.ops, which needs the compiled ops or their stand-in

from mmengine.config import Config  # noqa: E402
from mmengine.dist import is_main_process  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402
from mmengine.model import is_model_wrapper  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from emae import progress, settings  # noqa: E402
from emae.checkpoint import read_weights  # noqa: E402
from emae.errors import EmaeError  # noqa: E402
from emae.records import (  # noqa: E402
    RECORDS_FILE,
    Record,
    backbone_fields,
    check_rerun,
    finished_records,
    print_records,
    provenance,
    record_dataset,
    sha256_file,
    variant_settings,
    write_records,
)
from segmentation import backbone as bb  # noqa: E402
from segmentation.config import (  # noqa: E402
    attach_backbone,
    build_config,
    check_data_layout,
    check_encoder,
    config_path,
    describe,
    parse_cfg_options,
    set_norm_eps,
    summary,
)
from segmentation.resume import PlainCheckpointState  # noqa: E402

PROTOCOL = "upernet"
METRICS = ("mIoU", "mAcc", "aAcc")
BACKBONE_FILE = "backbone_mmseg.pth"
LAUNCHERS = ("none", "pytorch", "slurm", "mpi")


@dataclass(frozen=True)
class SegmentConfig(settings.CommandConfig):
    """``emae eval segment``'s config: defaults < ``--config-file`` (YAML or JSON) < flags (:mod:`emae.settings`),
    saved as ``config.json`` in the run's work dir. ``config`` names the mmseg config."""

    checkpoint: str = ""
    config: str = ""  # a preset of segmentation/configs or a .py mmengine config file
    data: str = ""  # dataset root in ADE20K's layout
    output_dir: str = "runs/segment"  # records.jsonl and one work dir per run
    seed: int = 0
    iters: int = 0  # training iterations (0: the config's)
    batch_size: int = 0  # images per process (0: the config's)
    amp: bool = False  # mixed precision (AmpOptimWrapper, dynamic loss scale)
    launcher: str = "none"  # mmengine's launcher: none, pytorch (under torchrun), slurm, mpi
    cfg_options: tuple[str, ...] = ()  # mmengine config overrides, KEY=VALUE (parse_cfg_options)
    # the records' backbone fields for a checkpoint without our pre-training config (official MAE)
    method: str | None = None
    pretrain_epochs: int | None = None
    pretrain_data: str | None = None

    def validate(self) -> "SegmentConfig":
        settings.require(self, ("checkpoint", "config", "data"), "--config-file")
        if self.launcher not in LAUNCHERS:
            raise EmaeError(f"launcher must be one of {', '.join(LAUNCHERS)}, got {self.launcher!r}")
        parse_cfg_options(self.cfg_options)
        return self

    def overrides(self) -> dict:
        """The records' backbone fields this config sets (None: from the checkpoint)."""
        return {"method": self.method, "pretrain_epochs": self.pretrain_epochs, "pretrain_data": self.pretrain_data}




class Progress(Hook):
    """Reports each training iteration (phase ``train``) and test batch (phase ``eval``) of the first process to
    :mod:`emae.progress`."""

    priority = "LOW"

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if is_main_process():
            progress.report(runner.iter + 1, runner.max_iters, "iters", "train")

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if is_main_process():
            progress.report(batch_idx + 1, len(runner.test_dataloader), "batches", "eval")


def run_id(cfg: Config, checkpoint_sha256: str) -> str:
    """12 hex digits naming the run: the checkpoint's hash and the config (before the run's own paths)."""
    text = json.dumps({"checkpoint": checkpoint_sha256, "config": cfg.to_dict()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def check_saved_config(work_dir: Path, cfg: SegmentConfig) -> None:
    """A re-run in a work dir that holds a run (its ``config.json``) must differ from it only in
    :data:`emae.records.RUN_FIELDS`; otherwise the error names the fields."""
    check_rerun(work_dir / settings.CONFIG_FILE, cfg.to_dict())


def segment(cfg: SegmentConfig) -> list[Record]:
    """Train and evaluate UperNet on ``cfg.checkpoint``'s encoder; returns the records (new or already written)."""
    started = time.perf_counter()
    checkpoint = cfg.checkpoint
    if not Path(checkpoint).exists():
        raise EmaeError(f"{checkpoint}: checkpoint not found")
    if cfg.launcher != "none" and not torch.cuda.is_available():
        raise EmaeError(f"--launcher {cfg.launcher} needs GPUs: mmengine's launchers run one process per GPU")
    check_data_layout(cfg.data)
    mmcfg = build_config(cfg.config, cfg.data, cfg.seed, cfg.iters, cfg.batch_size, cfg.amp,
                         parse_cfg_options(cfg.cfg_options))
    checkpoint_sha256 = sha256_file(checkpoint)
    rid = run_id(mmcfg, checkpoint_sha256)
    out = Path(cfg.output_dir)
    work_dir = out / f"{config_path(cfg.config).stem}-{rid}"
    check_saved_config(work_dir, cfg)
    records_path = out / RECORDS_FILE
    record_config = {"config": cfg.config, "data": str(cfg.data), "run_id": rid, **summary(mmcfg)}
    done = finished_records(records_path, record_config, checkpoint_sha256, PROTOCOL, METRICS)
    if done:
        print(f"already evaluated (run {rid}, records in {records_path}):")
        print_records(done)
        return done

    weights = read_weights(checkpoint)
    check_encoder(mmcfg, weights.info, checkpoint)
    set_norm_eps(mmcfg, weights.info.norm_eps)
    resumed = (work_dir / "last_checkpoint").is_file()
    created = [d for d in (out, work_dir) if not d.exists()]
    try:  # a run that fails before training leaves no folder behind
        exported = bb.export_backbone(weights, work_dir / BACKBONE_FILE)
        attach_backbone(mmcfg, exported.path)
        mmcfg.work_dir = str(work_dir)
        mmcfg.launcher = cfg.launcher
        mmcfg.resume = True  # from work_dir's last checkpoint, if there is one
        mmcfg.load_from = None
        if isinstance(mmcfg.get("visualizer"), dict):  # mmengine keeps one visualizer per name and process
            mmcfg.visualizer.name = f"visualizer-{work_dir.name}-{time.time_ns()}"
        try:
            runner = Runner.from_cfg(mmcfg)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise EmaeError(f"{config_path(cfg.config)}: the config does not build a runner: "
                            f"{describe(e)}") from None
        runner.register_hook(PlainCheckpointState())
        runner.register_hook(Progress())
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        bb.check_shapes(model.backbone, exported)
        report = bb.pretrained_load_report(model.backbone)
        bb.check_load_report(report, exported.path)
        if is_main_process():
            cfg.save(work_dir)
    except BaseException:
        for folder in reversed(created):
            shutil.rmtree(folder, ignore_errors=True)
        raise
    runner.logger.info(f"backbone {exported.arch} from {checkpoint}: missing (initialised by mmseg) "
                       f"{list(bb.missing_patterns(report))}, unused {list(report.unexpected)}")
    runner.train()
    metrics = runner.test()
    if not is_main_process():
        return []
    extra = {"run_id": rid, "work_dir": str(work_dir), "resumed": resumed, "load_report": bb.report_summary(report)}
    extra.update(variant_settings(exported.config))
    base = dict(backbone_fields(exported.config, exported.arch, cfg.overrides()), protocol=PROTOCOL,
                dataset=record_dataset(cfg.data, "val", mmcfg.get("dataset_name")), seed=cfg.seed, extra=extra,
                **provenance(record_config, checkpoint, time.perf_counter() - started, checkpoint_sha256))
    return write_records(records_path, [Record(metric=m, value=round(float(metrics[m]), 2), **base) for m in METRICS])

