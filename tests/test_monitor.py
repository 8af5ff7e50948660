"""The kNN monitor of pre-training (``emae.monitor``) and its time-to-accuracy table (``results.monitor``)."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from emae import monitor as monitor_module
from emae.checkpoint import load_checkpoint, read_weights, save_checkpoint
from emae.config import PRESETS, PretrainConfig, preset_config
from emae.data import FASHION_MNIST_DIR, FashionMNIST, eval_transform
from emae.engine import train
from emae.errors import EmaeError
from emae.models import build_model
from emae.monitor import VALIDATION_IMAGES, encoder_features, held_out_data, held_out_indices
from emae.records import Record, read_records, write_records
from results.monitor import monitor_curves, monitor_targets, time_to_accuracy, time_to_accuracy_table
from results.report import write_report
from results.tables import records_frame


def monitored(tmp_path, **kw) -> PretrainConfig:
    """A run of 4 updates an epoch (256 images, batches of 64), a point every 2 updates on 100 + 100 images."""
    values = dict(subset=256, epochs=1, warmup_epochs=0, batch_size=64, num_workers=0, blr=1e-3, monitor="knn",
                  monitor_every=2, monitor_images=100, output_dir=str(tmp_path))
    values.update(kw)
    return PretrainConfig(**values)


def log_points(out: Path) -> list[dict]:
    lines = [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]
    return [line["monitor"] for line in lines if "monitor" in line]


@pytest.mark.fmnist
@pytest.mark.slow
def test_the_points_go_to_the_log_the_record_and_tensorboard_with_the_cost_printed(tmp_path, capsys):
    summary = train(monitored(tmp_path))
    (record,) = read_records(tmp_path / "records.jsonl")
    mon = record.extra["monitor"]
    assert [p["step"] for p in mon["curve"]] == [0, 2, 4]  # the start, every 2 updates, the end
    assert log_points(tmp_path) == mon["curve"]
    for p in mon["curve"]:
        assert p["images_seen"] == 64 * p["step"] and p["flops"] == p["step"] * summary["flops_per_iter"]
        assert 0 <= p["top1"] <= 100 and p["epoch"] == (0 if p["step"] == 0 else 1)
    walls = [p["wall_time_s"] for p in mon["curve"]]
    assert walls[0] == 0 and walls == sorted(walls) and walls[-1] <= record.wall_time_s
    assert mon["seconds"] == pytest.approx(mon["curve"][-1]["monitor_s"]) and mon["seconds"] > 0
    assert mon["share"] == pytest.approx(mon["seconds"] / record.wall_time_s)
    assert (mon["k"], mon["temperature"], mon["images"], mon["every"]) == (20, 0.07, 100, 2)
    out = capsys.readouterr().out
    assert f"kNN monitor: 3 points, last top-1 {mon['curve'][-1]['top1']:.2f} % at step 4" in out
    assert f"{100 * mon['share']:.1f} % of the {record.wall_time_s:.1f} s of pre-training" in out
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("monitor/knn_top1")] == [
        (p["step"], pytest.approx(p["top1"])) for p in mon["curve"]]


@pytest.mark.fmnist
@pytest.mark.slow
def test_the_monitors_seconds_are_left_out_of_the_training_clock(tmp_path, monkeypatch):
    """A monitor that takes 4 s a point: the run's wall time and the points' lose those seconds."""
    def slow_top1(*args):
        time.sleep(4.0)
        return 50.0

    monkeypatch.setattr(monitor_module, "knn_top1", slow_top1)
    started = time.perf_counter()
    train(monitored(tmp_path))
    elapsed = time.perf_counter() - started
    (record,) = read_records(tmp_path / "records.jsonl")
    curve = record.extra["monitor"]["curve"]
    assert len(curve) == 3 and record.extra["monitor"]["seconds"] >= 12.0
    assert record.wall_time_s < elapsed - 12.0
    between = [b["wall_time_s"] - a["wall_time_s"] for a, b in zip(curve, curve[1:])]
    assert max(between) < 4.0  # two updates of this tiny run take well under one point of this monitor


@pytest.mark.fmnist
@pytest.mark.slow
def test_a_resumed_run_continues_the_curve(tmp_path):
    train(monitored(tmp_path))
    first = read_records(tmp_path / "records.jsonl")[0].extra["monitor"]
    assert load_checkpoint(tmp_path / "checkpoint.pth")["monitor"]["points"] == first["curve"]
    train(monitored(tmp_path, epochs=2), resume=tmp_path / "checkpoint.pth")
    resumed = read_records(tmp_path / "records.jsonl")[-1].extra["monitor"]
    assert [p["step"] for p in resumed["curve"]] == [0, 2, 4, 6, 8]
    assert resumed["curve"][:3] == first["curve"]  # the earlier points, kept as they were
    assert resumed["seconds"] > first["seconds"]
    assert [p["step"] for p in log_points(tmp_path)] == [0, 2, 4, 6, 8]
    # a checkpoint of a monitored run that lost the monitor's state is not resumed with a curve begun again
    ckpt = load_checkpoint(tmp_path / "checkpoint.pth")
    del ckpt["monitor"]
    save_checkpoint(ckpt, tmp_path / "stateless.pth")
    with pytest.raises(EmaeError, match="the checkpoint being resumed has no monitor state"):
        train(monitored(tmp_path, epochs=3), resume=tmp_path / "stateless.pth")


def test_the_held_out_subset_avoids_the_validation_split_the_test_set_and_the_evaluations_images():
    from evaluation.common import EvalConfig
    from evaluation.presets import PRESETS as EVAL_PRESETS

    assert VALIDATION_IMAGES == EvalConfig.val_size  # the evaluations' validation split: the last 10k
    bank, queries = held_out_indices(60000, 2000)
    assert (bank, queries) == (range(0, 2000), range(48000, 50000))
    assert not set(bank) & set(queries) and queries.stop <= 60000 - EvalConfig.val_size
    limits = [preset["train_limit"] for preset in EVAL_PRESETS["fmnist"].values()]
    assert queries.start >= max(limits)  # beyond the training images kNN, the probe and the fine-tune read
    assert held_out_indices(60000, 25000) == (range(0, 25000), range(25000, 50000))
    with pytest.raises(EmaeError, match="monitor_images=25001: .* do not fit in the 50000 training images before "
                                        "the validation split .*at most 25000"):
        held_out_indices(60000, 25001)


@pytest.mark.fmnist
def test_the_held_out_images_are_training_images_at_those_indices():
    cfg = PretrainConfig(monitor="knn", monitor_images=20)
    (bank, bank_labels), (queries, query_labels) = held_out_data(cfg, torch.device("cpu"))
    train_set = FashionMNIST(FASHION_MNIST_DIR, train=True, transform=eval_transform(32, cfg.mean, cfg.std, 1.0))
    assert bank.shape == queries.shape == (20, 1, 32, 32)
    assert bank_labels.tolist() == train_set.targets[:20].tolist()
    assert query_labels.tolist() == train_set.targets[49980:50000].tolist()
    assert torch.equal(bank, torch.stack([train_set[i][0] for i in range(20)]))
    assert torch.equal(queries, torch.stack([train_set[i][0] for i in range(49980, 50000)]))


def test_the_features_are_the_evaluations_avg_read_out(tiny_checkpoint):
    """The monitor's features of a model equal those ``emae eval knn --global-pool avg`` reads from its checkpoint."""
    from evaluation.backbone import build_vit
    from evaluation.features import FrozenEncoder

    state = load_checkpoint(tiny_checkpoint)
    cfg = PretrainConfig.from_dict(state["config"])
    model = build_model(cfg.arch, cfg.img_size, cfg.in_chans)
    model.load_state_dict(state["model"])
    model.train()
    imgs = torch.randn(6, 1, 32, 32)
    timm_model, _ = build_vit(read_weights(tiny_checkpoint), global_pool="avg")
    expected = FrozenEncoder(timm_model)(imgs)
    assert torch.allclose(encoder_features(model, imgs, batch_size=4), expected, atol=1e-5)
    assert model.training  # back in train mode


def test_bad_monitor_settings_are_errors():
    with pytest.raises(EmaeError, match=r"monitor must be '' \(none\), knn or auto, got 'nn'"):
        PretrainConfig(monitor="nn").validate()
    with pytest.raises(EmaeError, match="monitor_every must be >= 0 updates"):
        PretrainConfig(monitor="knn", monitor_every=-1).validate()
    with pytest.raises(EmaeError, match="monitor_images must be >= k=20"):
        PretrainConfig(monitor="knn", monitor_images=5).validate()
    for preset in ("fmnist-tiny", "fmnist-small"):
        assert PRESETS[preset]["monitor"] == "auto"  # on by default at small scale (knn on Fashion-MNIST)
        PretrainConfig(**{k: v for k, v in PRESETS[preset].items()}).validate()


@pytest.mark.fmnist
def test_a_monitor_on_data_without_labels_or_too_many_images_fails_before_the_folder(tmp_path, image_folder):
    cfg = monitored(tmp_path / "images", dataset="images", data=str(image_folder), subset=64)
    with pytest.raises(EmaeError, match="--monitor knn scores Fashion-MNIST's labelled training images; dataset "
                                        "'images' is not supported"):
        train(cfg)
    with pytest.raises(EmaeError, match="monitor_images=30000: "):
        train(monitored(tmp_path / "many", monitor_images=30000))
    assert not (tmp_path / "images").exists() and not (tmp_path / "many").exists()


@pytest.mark.fmnist
@pytest.mark.slow
def test_two_processes_monitor_once_on_rank_0(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "emae", "pretrain", "--subset", "256", "--batch-size", "32", "--epochs", "1", "--warmup-epochs", "0",
           "--num-workers", "0", "--monitor-every", "2", "--monitor-images", "100",
           "--output-dir", str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    (record,) = read_records(tmp_path / "records.jsonl")
    curve = record.extra["monitor"]["curve"]
    assert [p["step"] for p in curve] == [0, 2, 4] and [p["images_seen"] for p in curve] == [0, 128, 256]
    assert log_points(tmp_path) == curve  # written once, by rank 0
    assert result.stdout.count("kNN monitor: 3 points") == 1


def curve(tops: list[float], wall_step: float, images_step: int = 256, flops_step: float = 1e12) -> list[dict]:
    return [{"step": i, "epoch": i, "images_seen": i * images_step, "flops": i * flops_step,
             "wall_time_s": i * wall_step, "monitor_s": 0.5 * (i + 1), "top1": top} for i, top in enumerate(tops)]


def pretrain_record(record: dict, method: str, epochs: int, seed: int, tops: list[float] | None, wall_step: float,
                    **config) -> Record:
    extra = {"iterations": len(tops or [0]) - 1}
    if tops is not None:
        extra["monitor"] = {"kind": "knn", "curve": curve(tops, wall_step)}
    return Record(**dict(record, method=method, pretrain_epochs=epochs, seed=seed, protocol="pretrain",
                         metric="loss", value=0.1, config=config, extra=extra))


@pytest.fixture
def monitored_records(record) -> list[Record]:
    return [
        pretrain_record(record, "mae", 4, 0, [70, 74, 77, 79, 80], 10.0),
        pretrain_record(record, "emae", 2, 0, [72, 74, 76, 78, 79.5], 8.0),
        # not read: a shorter MAE run, a second seed, a run without a monitor
        pretrain_record(record, "mae", 1, 0, [60, 90], 1.0),
        pretrain_record(record, "mae", 4, 1, [60, 61, 62, 63, 90], 1.0),
        pretrain_record(record, "parallel", 4, 0, None, 1.0),
    ]


def test_time_to_accuracy_of_hand_made_curves(monitored_records):
    curves = monitor_curves(records_frame(monitored_records))
    assert curves[["method", "pretrain_epochs", "seed"]].drop_duplicates().values.tolist() == [["mae", 4, 0],
                                                                                             ["emae", 2, 0]]
    targets = monitor_targets(curves)
    assert targets["target"].tolist() == ["untrained + 5", "MAE's final"]
    assert targets["target_top1"].tolist() == [76.0, 80.0]  # (70 + 72) / 2 + 5; MAE's last point
    reached = time_to_accuracy(curves, targets).set_index(["target", "method"])
    mae, emae = reached.loc[("untrained + 5", "mae")], reached.loc[("untrained + 5", "emae")]
    assert (mae["step"], mae["wall_time_s"], mae["images_seen"], mae["flops"], mae["top1"]) == (2, 20.0, 512, 2e12, 77)
    assert (emae["step"], emae["wall_time_s"], emae["images_seen"], emae["top1"]) == (2, 16.0, 512, 76)
    assert reached.loc[("MAE's final", "mae"), "wall_time_s"] == 40.0
    assert math.isnan(reached.loc[("MAE's final", "emae"), "wall_time_s"])  # 79.5 never reaches 80
    table = time_to_accuracy_table(time_to_accuracy(curves, targets))
    assert table.loc[3].tolist() == ["vit_tiny_fmnist", "fashion-mnist", "MAE's final", "80.00", "EMAE", "-", "-", "-",
                                     "-", "-"]
    assert table.loc[0, ["Method", "Wall time (s)", "Images seen", "TFLOPs"]].tolist() == ["MAE", "20.0", "512", "2"]


def test_the_report_has_the_time_to_accuracy_section_and_plot(monitored_records, tmp_path):
    path = tmp_path / "records.jsonl"
    write_records(path, monitored_records, echo=False)
    written = write_report(path, tmp_path / "out", ["md", "csv"])
    assert {"time_to_accuracy.csv", "monitor_knn_vs_wall_time.png"} <= {p.name for p in written}
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "## Our pre-training runs: time to kNN accuracy (the monitor)" in md
    assert "![monitor_knn_vs_wall_time](monitor_knn_vs_wall_time.png)" in md


def test_a_report_without_monitored_runs_has_no_such_section(record, tmp_path):
    path = tmp_path / "records.jsonl"
    write_records(path, [pretrain_record(record, "mae", 4, 0, None, 1.0)], echo=False)
    written = write_report(path, tmp_path / "out", ["md"])
    assert "monitor_knn_vs_wall_time.png" not in {p.name for p in written}
    assert "time to kNN accuracy" not in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")


def test_the_presets_auto_monitor_is_knn_on_fashion_mnist_and_none_on_other_data():
    for name in ("fmnist-tiny", "fmnist-small"):
        cfg = preset_config(name)
        assert cfg.monitor == "auto" and monitor_module.monitor_kind(cfg) == "knn"
        other = dataclasses.replace(cfg, dataset="images", data="any/folder")
        assert monitor_module.monitor_kind(other) == ""
        assert monitor_module.build_monitor(other, torch.device("cpu"), 256) is None
    assert monitor_module.monitor_kind(dataclasses.replace(preset_config("fmnist-tiny"), monitor="knn",
                                                           dataset="images")) == "knn"  # asked for: its error
