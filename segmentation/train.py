"""``emae eval segment``: UperNet on a pre-trained ViT, trained and evaluated by mmengine's Runner.

A run:

1. builds the mmengine config (:mod:`segmentation.config`) and names its folder
   ``OUTPUT_DIR/CONFIG-RUNID``, where RUNID hashes the checkpoint and the config, so a re-run of the same
   command finds its own folder: mmengine resumes there from the last checkpoint (``resume=True``), and a
   run whose records are already in ``OUTPUT_DIR/records.jsonl`` is not repeated;
2. exports the checkpoint's encoder for mmseg into that folder (:mod:`segmentation.backbone`) and checks
   that mmseg's ``Pretrained`` load of it leaves only the expected keys missing;
3. trains (``Runner.train``), evaluates the final model on the validation split with mmseg's
   ``IoUMetric`` (``Runner.test``) and appends one record per metric (mIoU, mAcc, aAcc; percent).

Several processes (one per GPU) are mmengine's launcher: ``torchrun --nproc-per-node N -m emae eval segment
... --launcher pytorch``; the first process writes the records.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import torch

from segmentation.mmcv_ops import install as install_mmcv_ops

install_mmcv_ops()  # mmseg imports mmcv.ops, which needs the compiled ops or their stand-in

from mmengine.config import Config  # noqa: E402
from mmengine.dist import is_main_process  # noqa: E402
from mmengine.model import is_model_wrapper  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from emae.checkpoint import load_encoder  # noqa: E402
from emae.errors import EmaeError  # noqa: E402
from results.datasets import record_dataset  # noqa: E402
from results.records import (RECORDS_FILE, Record, append_records, backbone_fields, provenance,  # noqa: E402
                             read_records, sha256_file)
from segmentation import backbone as bb  # noqa: E402
from segmentation.config import (attach_backbone, build_config, check_data_layout, check_encoder,  # noqa: E402
                                 config_path, describe, summary)
from segmentation.resume import PlainCheckpointState  # noqa: E402

PROTOCOL = "upernet"
METRICS = ("mIoU", "mAcc", "aAcc")
BACKBONE_FILE = "backbone_mmseg.pth"


def run_id(cfg: Config, checkpoint_sha256: str) -> str:
    """12 hex digits naming the run: the checkpoint's hash and the config (before the run's own paths)."""
    text = json.dumps({"checkpoint": checkpoint_sha256, "config": cfg.to_dict()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def finished_records(records_path: Path, rid: str) -> list[Record]:
    if not records_path.exists():
        return []
    return [r for r in read_records(records_path) if r.protocol == PROTOCOL and r.extra.get("run_id") == rid]


def segment(checkpoint: str, config: str, data: str, output_dir: str = "runs/segment", seed: int = 0,
            iters: int = 0, batch_size: int = 0, amp: bool = False, launcher: str = "none",
            cfg_options: dict | None = None, overrides: dict | None = None) -> list[Record]:
    """Train and evaluate UperNet on ``checkpoint``'s encoder; returns the records (new or already written).

    ``overrides`` sets the records' method / pretrain_epochs / pretrain_data for a checkpoint without our
    pre-training config (official MAE).
    """
    started = time.perf_counter()
    if not Path(checkpoint).is_file():
        raise EmaeError(f"{checkpoint}: checkpoint not found")
    if launcher != "none" and not torch.cuda.is_available():
        raise EmaeError(f"--launcher {launcher} needs GPUs: mmengine's launchers run one process per GPU")
    check_data_layout(data)
    cfg = build_config(config, data, seed, iters, batch_size, amp, cfg_options)
    checkpoint_sha256 = sha256_file(checkpoint)
    rid = run_id(cfg, checkpoint_sha256)
    out = Path(output_dir)
    records_path = out / RECORDS_FILE
    done = finished_records(records_path, rid)
    if done:
        print(f"already evaluated (run {rid}, records in {records_path}):")
        print_records(done)
        return done

    _, info, _ = load_encoder(checkpoint)
    check_encoder(cfg, info, checkpoint)
    work_dir = out / f"{config_path(config).stem}-{rid}"
    resumed = (work_dir / "last_checkpoint").is_file()
    created = [d for d in (out, work_dir) if not d.exists()]
    try:  # a run that fails before training leaves no folder behind
        exported = bb.export_backbone(checkpoint, work_dir / BACKBONE_FILE)
        attach_backbone(cfg, exported.path)
        cfg.work_dir = str(work_dir)
        cfg.launcher = launcher
        cfg.resume = True  # from work_dir's last checkpoint, if there is one
        cfg.load_from = None
        if isinstance(cfg.get("visualizer"), dict):  # mmengine keeps one visualizer per name and process
            cfg.visualizer.name = f"visualizer-{work_dir.name}-{time.time_ns()}"
        try:
            runner = Runner.from_cfg(cfg)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise EmaeError(f"{config_path(config)}: the config does not build a runner: {describe(e)}") from None
        runner.register_hook(PlainCheckpointState())
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        bb.check_shapes(model.backbone, exported)
        report = bb.pretrained_load_report(model.backbone)
        bb.check_load_report(report, exported.path)
    except BaseException:
        for folder in reversed(created):
            shutil.rmtree(folder, ignore_errors=True)
        raise
    runner.logger.info(f"backbone {exported.arch} from {checkpoint}: missing (initialised by mmseg) "
                       f"{list(report.missing_patterns)}, unused {list(report.unexpected)}")
    runner.train()
    metrics = runner.test()
    if not is_main_process():
        return []
    extra = {"run_id": rid, "work_dir": str(work_dir), "resumed": resumed, "load_report": report.to_dict()}
    if exported.config:
        extra.update({k: exported.config[k] for k in ("parts", "mask_ratio") if k in exported.config})
    base = dict(backbone_fields(exported.config, exported.arch, overrides), protocol=PROTOCOL,
                dataset=record_dataset(data, "val", cfg.get("dataset_name")), seed=seed, extra=extra,
                **provenance({"config": config, "data": str(data), **summary(cfg)}, checkpoint,
                             time.perf_counter() - started))
    records = [Record(metric=m, value=round(float(metrics[m]), 2), **base) for m in METRICS]
    append_records(records_path, records)
    print_records(records)
    return records


def print_records(records: list[Record]) -> None:
    for r in records:
        print(f"{r.protocol} {r.metric} = {r.value:.2f} % on {r.dataset} ({r.arch}, {r.wall_time_s:.0f} s)")
