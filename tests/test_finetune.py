"""Fine-tuning's schedule and the shared training loop: fractional warm-up, progress reports, the fmnist preset."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from emae import progress
from evaluation import training
from evaluation.common import resolve_config
from evaluation.finetune import FinetuneConfig, add_arguments
from evaluation.finetune import run as run_finetune



def _lrs(scheduler, optimizer, updates: int) -> list[float]:
    values = []
    for step in range(updates):
        scheduler.step_update(step)
        values.append(optimizer.param_groups[0]["lr"])
    return values


def test_fractional_warm_up_is_that_share_of_the_updates():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    lrs = _lrs(training.cosine_schedule(optimizer, 1, 0.25, 20, 0.0), optimizer, 20)
    assert lrs[:6] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])  # 5 warm-up updates from 0, then the peak
    assert all(a > b > 0 for a, b in zip(lrs[5:], lrs[6:]))  # half-cycle cosine towards min_lr
    whole = _lrs(training.cosine_schedule(optimizer, 2, 1, 10, 0.0), optimizer, 20)  # whole epochs as before
    assert whole[:11] == pytest.approx([i / 10 for i in range(11)])


def test_fine_tune_takes_a_fractional_warm_up_from_the_command_line():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg = resolve_config(FinetuneConfig, parser.parse_args(["--checkpoint", "c.pth", "--warmup-epochs", "0.5"]))
    assert cfg.warmup_epochs == 0.5 and FinetuneConfig.from_dict(cfg.to_dict()) == cfg


def test_training_reports_every_update_and_every_evaluation_batch(reports):
    model = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = training.Trainer(model, model, optimizer, training.cosine_schedule(optimizer, 2, 0, 3, 0.0),
                               nn.CrossEntropyLoss(), torch.device("cpu"), accum=2, total_updates=6)
    torch.manual_seed(0)
    loader = [(torch.randn(5, 4), torch.randint(0, 3, (5,))) for _ in range(7)]  # 3 updates; the 7th is left out
    step, _ = training.train_one_epoch(trainer, loader, 0, "epoch 1/2")
    step, _ = training.train_one_epoch(trainer, loader, step, "epoch 2/2")
    assert step == 6
    assert reports == [(d, 6, "steps", "train") for d in (0, 1, 2, 3, 3, 4, 5, 6)]  # each epoch's start, each update
    reports.clear()
    training.evaluate(model, loader[:3], torch.device("cpu"))
    assert reports == [(i, 3, "batches", "eval") for i in range(4)]
    reports.clear()
    alone = training.Trainer(model, model, optimizer, training.cosine_schedule(optimizer, 1, 0, 3, 0.0),
                             nn.CrossEntropyLoss(), torch.device("cpu"), accum=2)  # no total: the epoch's end
    training.train_one_epoch(alone, loader, 4, "epoch")
    assert reports[0] == (4, 7, "steps", "train") and reports[-1] == (7, 7, "steps", "train")


@pytest.mark.fmnist
def test_a_fine_tune_reports_its_steps_over_the_whole_run(tiny_checkpoint, tmp_path, reports):
    cfg = FinetuneConfig(checkpoint=str(tiny_checkpoint), output_dir=str(tmp_path / "ft"), epochs=2, warmup_epochs=0.5,
                         batch_size=32, effective_batch=64, mixup=0.0, cutmix=0.0, auto_augment="", reprob=0.0,
                         drop_path=0.0, train_limit=256, val_limit=96, test_limit=64, threads=1, num_workers=0)
    run_finetune(cfg)
    train = [r for r in reports if r[3] == "train"]
    assert train[0] == (0, 8, "steps", "train") and train[-1] == (8, 8, "steps", "train")  # 2 epochs x 4 updates
    assert [r[0] for r in train] == sorted(r[0] for r in train)
    assert reports[-1] == (2, 2, "batches", "eval")  # the test split's 2 batches of 32, once at the end
    assert [r for r in reports if r[3] == "eval"].count((3, 3, "batches", "eval")) == 2  # validation, each epoch


@pytest.mark.fmnist
def test_progress_file_holds_the_last_report(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv(progress.ENV, str(tmp_path / "progress.json"))
    cfg = FinetuneConfig(checkpoint=str(tiny_checkpoint), output_dir=str(tmp_path / "ft"), epochs=1, warmup_epochs=0,
                         batch_size=32, effective_batch=32, mixup=0.0, cutmix=0.0, auto_augment="", reprob=0.0,
                         drop_path=0.0, train_limit=128, val_limit=64, test_limit=64, threads=1, num_workers=0)
    run_finetune(cfg)
    entry = json.loads(Path(tmp_path / "progress.json").read_text())
    assert {k: entry[k] for k in ("done", "total", "unit", "phase")} == \
           {"done": 2, "total": 2, "unit": "batches", "phase": "eval"}


def test_fmnist_fine_tune_preset_is_a_quick_signal_in_maes_shape():
    """The fmnist preset (docstring of evaluation.presets): one epoch of 468 updates of 64 on 30k images with a
    tenth of it warming up, MAE's layer decay and average pooling, no regularising augmentation, torch's threads
    and no loader worker."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg = resolve_config(FinetuneConfig, parser.parse_args(["--checkpoint", "c.pth", "--preset", "fmnist"]))
    assert (cfg.train_limit, cfg.epochs, cfg.batch_size, cfg.effective_batch) == (30000, 1, 64, 64)
    assert (cfg.threads, cfg.num_workers) == (0, 0)
    assert cfg.warmup_epochs == 0.1 and cfg.blr == 1e-2 and cfg.layer_decay == 0.75 and cfg.global_pool == "avg"
    assert (cfg.mixup, cfg.cutmix, cfg.auto_augment, cfg.reprob, cfg.drop_path, cfg.crop_min_scale) == \
           (0.0, 0.0, "", 0.0, 0.0, 1.0)
