"""The pipeline's floor and a stage's start-up: the FLOP count of a pipeline root, stage by stage, against the
records and a hand count, the figure's ratio, and a quick run of the start-up benchmark."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmarks.bench_pipeline import (DEFAULT_ROOT, StageCount, clear_bench_root, count_stages, finished, option,
                                      pipeline_figure)
from benchmarks.bench_startup import startup_figure
from benchmarks.ceiling import Ceiling
from benchmarks.common import BenchSettings
from emae.checkpoint import save_checkpoint, untrained_checkpoint
from emae.config import preset_config
from emae.errors import EmaeError
from emae.records import RECORDS_FILE, Record, append_records
from evaluation.knn import KnnConfig
from evaluation.linprobe import LinprobeConfig
from evaluation.presets import preset_values
from experiments.pipeline import PipelineConfig, stages
from experiments.runner import Stage


def fake_root(root: Path, done: dict[str, float]) -> dict[str, Stage]:
    """A pipeline root with its config and a ``pipeline.json`` whose finished stages are ``done``; its plan."""
    cfg = PipelineConfig(root=str(root))
    cfg.save(root)
    (root / "pipeline.json").write_text(json.dumps({"done": done, "started": list(done)}))
    return {stage.name: stage for stage in stages(cfg)}


def test_the_benchmark_reads_the_pipeline_make_run_writes_by_default():
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    run = re.search(r"^run:.*\n\t(.*)$", makefile, re.M).group(1)
    assert run.endswith(f"-m emae pipeline --root {DEFAULT_ROOT}")


def test_make_bench_clears_its_own_pipeline_and_nothing_else(tmp_path):
    root = tmp_path / "pipeline"
    clear_bench_root(root)  # none yet: nothing to do
    fake_root(root, {"report": 1.0})
    clear_bench_root(root)
    assert not root.exists()
    root.mkdir()
    (root / "notes.txt").write_text("mine")
    with pytest.raises(EmaeError, match=r"pipeline: not a pipeline's root \(no config.json\)"):
        clear_bench_root(root)
    assert (root / "notes.txt").read_text() == "mine"


def write_record(stage: Stage, protocol: str, extra: dict, config: dict | None = None) -> None:
    """One record of ``protocol`` in the stage's output folder."""
    record = Record(method="mae", arch="vit_tiny_p8_fmnist", pretrain_epochs=4, pretrain_data="fashion-mnist",
                    protocol=protocol, metric="top1", value=50.0, dataset="fashion-mnist test", seed=0,
                    checkpoint_sha256="", command="emae", config=config or {}, git_commit="", hardware="",
                    wall_time_s=1.0, date="2025-01-01T00:00:00+00:00", extra=extra)
    append_records(Path(option(stage.argv, "--output-dir")) / RECORDS_FILE, [record])


def vit_forward_flops(img: int, patch: int, chans: int, dim: int, depth: int, mlp: int = 4) -> int:
    """A ViT's forward on one image, by hand: the patch projection, then per block qkv, the two attention
    products, the output projection and the MLP's two layers (T = N + 1 tokens); pooling and norms are no
    products."""
    n = (img // patch) ** 2
    t = n + 1
    block = 2 * t * dim * 3 * dim + 2 * 2 * t * t * dim + 2 * t * dim * dim + 2 * 2 * t * dim * mlp * dim
    return 2 * n * patch * patch * chans * dim + depth * block


def test_a_root_counts_pretraining_from_its_record_and_lists_what_it_cannot_count(tmp_path):
    plan = fake_root(tmp_path, {"mae/pretrain": 120.0, "mae/export": 2.0, "report": 3.0})
    write_record(plan["mae/pretrain"], "pretrain", {"flops_per_iter": 9_061_000_000, "iterations": 938})
    counts = {c.name: c for c in count_stages(tmp_path)}
    assert list(counts) == list(plan)
    assert counts["mae/pretrain"] == StageCount("mae/pretrain", 120.0, 9_061_000_000 * 938,
                                                "938 iterations x 9.06 GFLOPs")
    assert counts["untrained/pretrain"].flops == 0 and counts["untrained/pretrain"].seconds is None  # --epochs 0
    assert (counts["mae/export"].flops, counts["report"].flops, counts["data/detection"].flops) == (0, 0, 0)
    for name in ("mae/knn", "emae/pretrain", "mae/detect", "mae/segment"):
        assert counts[name].flops is None and "no records (the stage did not finish)" in counts[name].note
    assert finished(tmp_path)  # the report is done
    assert not finished(tmp_path / "elsewhere")


def test_the_figure_is_the_stages_seconds_over_their_flops_at_the_mean_rate(tmp_path, capsys):
    fake_root(tmp_path, {})
    counts = [StageCount("train", 300.0, 3 * 10**13, "counted"), StageCount("data", 100.0, 0, "no arithmetic"),
              StageCount("other", 50.0, None, "not counted: no records")]
    rates = [Ceiling("product", 1e11, (0.8e11, 1.2e11)), Ceiling("product", 2e11, (2e11,))]
    figure = pipeline_figure(tmp_path, counts, rates, BenchSettings(records=""))
    # 450 s of stages over 3e13 FLOPs at the mean rate, 1.5e11 FLOP/s (a 200 s floor); per round 450 s x rate / FLOPs
    assert figure.value.median == pytest.approx(2.25)
    assert (figure.value.low, figure.value.high) == pytest.approx((1.2, 3.0))
    assert figure.met is True and figure.details["not_counted"] == ["other"]
    assert figure.details["floor_s"] == pytest.approx(200.0)
    table = capsys.readouterr().out
    assert "200.00   1.5x" in table  # the train stage: 300 s over its 200 s floor
    assert "1 not counted" in table


@pytest.mark.fmnist
def test_knn_counts_the_extraction_and_similarities_and_the_probe_reads_the_cache(tmp_path):
    """The encoder's forward, counted on the meta device, against a hand count (attention included), x the 20k
    training, 10k validation and 10k test images kNN extracted, plus its similarities; the probe that reused the features counts
    its heads only: 4 B D H C per update (forward and the weights' gradient), 2 N D H C per evaluation of the
    validation split and the chosen head once on the test split."""
    plan = fake_root(tmp_path, {"untrained/knn": 30.0, "untrained/linprobe": 20.0})
    checkpoint = tmp_path / "untrained.pth"
    save_checkpoint(untrained_checkpoint(preset_config("fmnist-small")), checkpoint)
    knn = KnnConfig.from_dict(dict(preset_values("fmnist", "knn"), checkpoint=str(checkpoint)))
    splits = {"train_images": 20000, "val_images": 10000, "test_images": 10000}
    write_record(plan["untrained/knn"], "knn", {**splits, "features_reused": False}, knn.to_dict())
    probe = LinprobeConfig.from_dict(dict(preset_values("fmnist", "linprobe"), checkpoint=str(checkpoint)))
    grid = {"avg": {}, "cls": {}}  # two read-outs
    write_record(plan["untrained/linprobe"], "linprobe",
                 {**splits, "batch_size": 1024, "features_reused": True, "grid": grid}, probe.to_dict())
    counts = {c.name: c for c in count_stages(tmp_path)}

    dim = 128  # vit_tiny_p8_fmnist: 8-px patches of 32-px grey images, 128-d, 4 blocks
    per_image = vit_forward_flops(32, 8, 1, dim, 4)
    # one product on the validation split for every k, one on the test split for the chosen k
    assert counts["untrained/knn"].flops == per_image * 40000 + 2 * 2 * 10000 * 20000 * dim
    heads = len(grid) * len(probe.blrs) * 10
    updates, evaluations = probe.epochs * (20000 // 1024), probe.epochs // probe.eval_every
    assert counts["untrained/linprobe"].flops == ((updates * 4 * 1024 + evaluations * 2 * 10000) * dim * heads
                                                  + 2 * 10000 * dim * 10)
    assert "features read from the cache" in counts["untrained/linprobe"].note


@pytest.mark.slow
def test_the_startup_bench_runs_quick():
    figure = startup_figure(BenchSettings(records="", quick=True))
    assert figure.key == "[8]" and figure.target is not None
    assert 0 < figure.value.median < 1  # a forked stage starts far faster than an interpreter imports torch
    assert figure.details["server_start_s"] > 0 and "fresh_over_forked" not in figure.details  # quick: no (c)
