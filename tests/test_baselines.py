"""The baselines every accuracy is read against: the untrained backbone (``emae pretrain --epochs 0``,
``--checkpoint random``) and raw pixels (``--checkpoint pixels``), through kNN, the linear probe, the records,
the summary and the report's tables."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from emae import engine
from emae.checkpoint import load_checkpoint
from emae.cli import main as cli_main
from emae.config import PretrainConfig
from emae.engine import train
from emae.records import read_records
from evaluation.common import RANDOM, resolve_config, untrained_file
from evaluation.knn import KnnConfig
from evaluation.linprobe import LinprobeConfig
from evaluation.linprobe import run as run_linprobe
from evaluation.presets import PRESETS
from results.summary import summary_frames
from results.tables import SPEC_BY_NAME, build_table, load_reference, records_frame

pytestmark = pytest.mark.fmnist

SMALL = dict(train_limit=1000, val_limit=500, threads=1, num_workers=0)


def test_zero_epochs_writes_the_model_a_run_of_the_same_seed_starts_from(tmp_path, monkeypatch):
    summary = train(PretrainConfig(epochs=0, seed=3, output_dir=str(tmp_path / "untrained")))
    untrained = load_checkpoint(summary["checkpoint"])
    assert untrained["epoch"] == 0 and untrained["config"]["epochs"] == 0
    # a real run of seed 3 starts from the same weights: those its optimiser is built on
    started = {}

    def build_optimizer(model, cfg, lr):
        started.update({k: v.clone() for k, v in model.state_dict().items()})
        return original(model, cfg, lr)

    original = engine.build_optimizer
    monkeypatch.setattr(engine, "build_optimizer", build_optimizer)
    train(PretrainConfig(epochs=1, warmup_epochs=0, seed=3, subset=64, batch_size=64, num_workers=0,
                         output_dir=str(tmp_path / "run")))
    assert started.keys() == untrained["model"].keys()
    assert all(torch.equal(untrained["model"][k], v) for k, v in started.items())
    trained = load_checkpoint(tmp_path / "run" / "checkpoint.pth")["model"]
    assert not torch.equal(trained["blocks.0.attn.qkv.weight"], started["blocks.0.attn.qkv.weight"])
    # and --checkpoint random in an evaluation is that same backbone
    monkeypatch.chdir(tmp_path)
    eval_cfg = KnnConfig(checkpoint=RANDOM, seed=3)
    path = untrained_file(eval_cfg)
    assert path.name == "untrained-vit_tiny_fmnist-32px-1ch-seed3.pth"
    random_state = load_checkpoint(path)["model"]
    assert all(torch.equal(random_state[k], v) for k, v in untrained["model"].items())


def test_untrained_and_pixel_baselines_through_knn_and_the_probe(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    records = []
    for checkpoint in (RANDOM, "pixels"):
        common = dict(features_dir=str(tmp_path / f"features-{checkpoint}"), **SMALL)
        args = ["--checkpoint", checkpoint, "--output-dir", str(tmp_path / f"knn-{checkpoint}")]
        assert cli_main(["eval", "knn", *args, "--train-limit", "1000", "--val-limit", "500", "--threads", "1",
                         "--num-workers", "0"]) == 0
        records += read_records(tmp_path / f"knn-{checkpoint}")
        cfg = LinprobeConfig(checkpoint=checkpoint, fast=True, epochs=40, warmup_epochs=2, effective_batch=256,
                             blrs=(10.0,), global_pool="avg", output_dir=str(tmp_path / f"lp-{checkpoint}"), **common)
        if checkpoint == RANDOM:
            cfg.checkpoint = str(untrained_file(cfg))
        records += run_linprobe(cfg)
    by = {(r.method, r.protocol, r.metric): r for r in records}
    shots = PRESETS["fmnist"]["knn"]["shots"]  # the preset's few-shot kNN banks, one record each
    assert set(by) == {(m, p, "top1") for m in ("untrained", "pixels") for p in ("knn", "linprobe")} | {
        (m, "linprobe", "top5") for m in ("untrained", "pixels")} | {
        (m, "knn", f"top1_{n}shot") for m in ("untrained", "pixels") for n in shots}
    for record in records:  # far above the 10 % of chance on Fashion-MNIST (few-shot banks: above it)
        assert record.value > (15 if record.metric.endswith("shot") else 40), record.metric
    pixels = by[("pixels", "knn", "top1")]
    assert (pixels.arch, pixels.pretrain_epochs, pixels.pretrain_data, pixels.checkpoint_sha256) == ("pixels", 0,
                                                                                                      "none", "")
    untrained = by[("untrained", "linprobe", "top1")]
    assert (untrained.arch, untrained.pretrain_epochs) == ("vit_tiny_fmnist", 0)
    # the summary puts the baselines first, without an epoch count, and Table XII shows them at 0 epochs
    display, _ = summary_frames(records_frame(records))
    assert list(display.columns)[3:] == ["untrained backbone", "raw pixels"]
    table = build_table(SPEC_BY_NAME["XII"], load_reference(), records_frame(records))
    ours = table.frame[table.frame["Source"] == "ours"]
    assert [label.split(" (")[0] for label in ours["Method"]] == ["untrained backbone", "raw pixels"]
    assert ours["0"].notna().all()


@pytest.mark.parametrize("protocol, extra, message", [
    ("finetune", [], "error: --checkpoint pixels (the raw-pixel baseline) has no backbone to finetune"),
    ("linprobe", ["--no-fast"], "error: --checkpoint pixels (the raw-pixel baseline) needs --fast"),
])
def test_pixels_where_no_backbone_trains_is_an_error(tmp_path, capsys, protocol, extra, message):
    code = cli_main(["eval", protocol, "--checkpoint", "pixels", "--output-dir", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(message) and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_random_uses_the_given_architecture(tmp_path, monkeypatch):
    import argparse

    from evaluation.common import add_config_arguments

    monkeypatch.chdir(tmp_path)
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, KnnConfig)
    cfg = resolve_config(KnnConfig, parser.parse_args(["--checkpoint", "random", "--arch", "vit_tiny_p8_fmnist",
                                                       "--seed", "2"]))
    assert Path(cfg.checkpoint) == tmp_path / "runs/baselines/untrained-vit_tiny_p8_fmnist-32px-1ch-seed2.pth"
    state = load_checkpoint(cfg.checkpoint)
    assert state["model"]["patch_embed.proj.weight"].shape == (128, 1, 8, 8)
    assert state["config"]["arch"] == "vit_tiny_p8_fmnist" and state["config"]["seed"] == 2


def test_summary_names_the_architecture_where_runs_of_several_meet():
    from test_results import make_record

    def cell(method, epochs, arch, value):
        return make_record(method=method, arch=arch, pretrain_epochs=epochs, pretrain_data="fashion-mnist",
                           dataset="fashion-mnist", protocol="linprobe", value=value)

    records = [cell("mae", 4, "vit_tiny_fmnist", 70.0), cell("untrained", 0, "vit_tiny_fmnist", 65.0),
               cell("pixels", 0, "pixels", 80.0)]
    display, _ = summary_frames(records_frame(records))
    assert list(display.columns)[3:] == ["untrained backbone", "raw pixels", "MAE, 4 ep"]
    display, _ = summary_frames(records_frame([*records, cell("mae", 4, "vit_tiny_p8_fmnist", 75.0)]))
    assert list(display.columns)[3:] == ["untrained backbone (vit_tiny_fmnist)", "raw pixels",
                                         "MAE, 4 ep (vit_tiny_fmnist)", "MAE, 4 ep (vit_tiny_p8_fmnist)"]
