"""The benchmarks' machinery, not their speed: the timing helper's order and ratios, the ceiling's products and
the warning on an impossible fraction, the FLOP count against a hand count, the records they write, the settings of
a run, and a quick run of the whole harness."""
from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from timm.models.vision_transformer import Block

from benchmarks import figures as bench_figures
from benchmarks import bench_pipeline, run_all
from benchmarks.bench_memory import growth
from benchmarks.ceiling import Ceiling, Gemm, GemmRecorder, flop_fraction, gemm_ceiling, product, step_gemms
from benchmarks.common import BenchSettings, parse_settings
from benchmarks.figures import Figure, Target, table
from benchmarks.timing import Spread, Timing, measure, ratio
from emae import cli
from emae.config import FASHION_MNIST_DIR, preset_config
from emae.engine import flops_per_iteration, forward_backward_flops
from emae.records import append_records, read_records
from results import report


class FakeClock:
    """A clock that only the timed functions move: each call of ``fn(name)`` logs it and takes its cost."""

    def __init__(self, costs: dict[str, float]):
        self.now, self.costs, self.log = 0.0, costs, []

    def __call__(self) -> float:
        return self.now

    def fn(self, name: str):
        def call():
            self.log.append(name)
            self.now += self.costs[name]
        return call


def fake_measure(costs: dict[str, float], **kwargs):
    clock = FakeClock(costs)
    timings = measure({name: clock.fn(name) for name in costs}, clock=clock, sync=lambda: None, **kwargs)
    return clock.log, timings


# the timing helper

def test_measure_warms_up_then_interleaves_rounds():
    log, timings = fake_measure({"A": 1.0, "B": 2.0}, repeats=3, warmup=2, min_sample_s=0)
    assert log == ["A", "B"] * 2 + ["A", "B", "B", "A", "A", "B"]  # two warm-up rounds, three timed: A B, B A, A B
    assert timings["A"].samples == (1.0,) * 3 and timings["B"].samples == (2.0,) * 3  # warm-up calls not kept


def test_measure_times_a_short_function_over_a_block_of_calls():
    log, timings = fake_measure({"step": 0.5, "mm": 0.001}, repeats=2, warmup=1, min_sample_s=0.01)
    assert log == ["step", "mm"] + ["step"] + ["mm"] * 10 + ["mm"] * 10 + ["step"]
    assert timings["mm"].calls_per_sample == 10 and timings["mm"].samples == pytest.approx((0.001, 0.001))
    assert timings["step"].calls_per_sample == 1


def test_measure_needs_warmup_and_repeats():
    with pytest.raises(ValueError):
        fake_measure({"A": 1.0}, repeats=3, warmup=0)


# ratios and spreads

def test_ratio_is_of_the_medians_with_the_per_round_range():
    num, den = Timing("num", (3.0, 1.0, 2.0)), Timing("den", (1.0, 1.0, 4.0))
    r = ratio(num, den)
    assert r.median == 2.0  # median(num) / median(den), not the median of the per-round ratios (1.0)
    assert (r.low, r.high) == (0.5, 3.0)  # per round: 3, 1, 0.5
    with pytest.raises(ValueError, match="same rounds"):
        ratio(num, Timing("other", (1.0, 2.0)))


def test_ratio_of_a_measured_pair():
    _, t = fake_measure({"ours": 1.0, "reference": 1.5}, repeats=5)
    speedup = ratio(t["reference"], t["ours"])
    assert (speedup.median, speedup.low, speedup.high) == pytest.approx((1.5, 1.5, 1.5))


def test_rates_and_spreads():
    rate = Timing("step", (2.0, 1.0, 4.0)).rate(8)  # images/s of a batch of 8
    assert (rate.median, rate.low, rate.high) == (4.0, 2.0, 8.0)
    with pytest.raises(ValueError):
        Spread(1.0, 2.0, 3.0)


def test_memory_growth():
    g = growth({2: 8.0, 4: 4.0, 14: 6.0})
    assert (g.median, g.low, g.high) == (0.75, 0.5, 1.0)


# the matmul ceiling and the fraction

def test_fraction_against_the_higher_ceiling():
    step = Timing("step", (1.0, 2.0, 1.0))
    square = Ceiling("square", 100.0, (100.0, 100.0, 100.0))
    shapes = Ceiling("shapes", 80.0, (80.0, 120.0, 80.0))
    frac = flop_fraction(50.0, step, [square, shapes], "[3] x")
    assert frac.ceiling is square and frac.warning is None
    assert frac.value.median == 0.5 and frac.value.low == pytest.approx(25 / 120) and frac.value.high == 0.5


def test_fraction_above_one_warns_that_the_ceiling_is_wrong():
    step = Timing("step", (1.0, 1.0, 1.0))
    ceilings = [Ceiling("the 2048 square product", 99.7e9, (99.7e9,) * 3), Ceiling("the step's products", 50e9,
                                                                                     (50e9,) * 3)]
    frac = flop_fraction(145.9e9, step, ceilings, "[3] ViT-S MAE")
    assert frac.value.median == pytest.approx(1.46, abs=0.01)
    assert frac.warning.startswith("WARNING [3] ViT-S MAE") and "the ceiling is wrong" in frac.warning
    assert "the 2048 square product ran at 99.7 GFLOP/s" in frac.warning
    fig = Figure("[3]", "ViT-S", "flop_fraction", frac.value, "3 rounds", "mae", "vit_small_patch16", "random", {},
                 Target(">=", 0.8), invalid=frac.warning)
    assert fig.met is None and fig.row()[-1] == "invalid"
    assert frac.impossible
    # above 1 in one round only: a warning naming that round's rates; the figure from the medians stands
    frac = flop_fraction(90e9, Timing("step", (1.0, 1.0, 0.5)), ceilings[:1], "[3] y")
    assert frac.value.median < 1 and not frac.impossible
    assert "a fraction of 1.81 in round 3 is above 1" in frac.warning
    assert "ran at 99.7 GFLOP/s in it, below the 180.0 GFLOP/s the step reached" in frac.warning


def test_gemm_shapes_of_a_linear_layer_and_its_backward():
    with torch.device("meta"):
        layer = torch.nn.Linear(8, 16)
        x = torch.zeros(4, 8, requires_grad=True)
        q = torch.zeros(3, 5, 7, requires_grad=True)
    recorder = GemmRecorder()
    with recorder:
        ((layer(x) ** 2).sum() + (torch.bmm(q, q.mT) ** 2).sum()).backward()  # gradients not broadcast
    assert recorder.gemms == Counter({
        Gemm("addmm", 1, 4, 8, 16, b_transposed=True): 1,  # x @ W.T + b
        Gemm("mm", 1, 4, 16, 8): 1,  # grad x = grad @ W
        Gemm("mm", 1, 16, 4, 8, a_transposed=True): 1,  # grad W = grad.T @ x
        Gemm("bmm", 3, 5, 7, 5, b_transposed=True): 1,  # q @ q.T
        Gemm("bmm", 3, 5, 5, 7): 1,  # grad through the left operand
        Gemm("bmm", 3, 7, 5, 5, a_transposed=True): 1,  # grad through the right operand
    })


def test_step_gemms_are_the_counted_flops():
    cfg = preset_config("fmnist-tiny")
    flops, gemms = step_gemms(cfg, 8)
    assert flops == flops_per_iteration(cfg, 8)
    product_flops = sum(g.flops * n for g, n in gemms.items())
    assert product_flops == flops  # every counted FLOP a matrix product, the patch embedding's too


def test_products_replay_shape_and_layout():
    out = product(Gemm("bmm", 3, 5, 7, 2, a_transposed=True))()
    assert out.shape == (3, 5, 2)
    assert product(Gemm("addmm", 1, 4, 6, 9, b_transposed=True))().shape == (4, 9)
    gemms = Counter({Gemm("mm", 1, 10, 10, 10): 3, Gemm("mm", 1, 20, 20, 20): 1})
    timings = {g: Timing(str(g), (t, t, 2 * t)) for g, t in zip(gemms, (1.0, 2.0))}
    ceiling = gemm_ceiling(gemms, timings, "products")  # the FLOPs of all products over the sum of their times
    assert ceiling.median == pytest.approx((3 * 2000 + 16000) / (3 * 1.0 + 2.0))
    assert ceiling.per_round == pytest.approx((ceiling.median, ceiling.median, ceiling.median / 2))


# the FLOP count against a hand count (vit_tiny_fmnist: width 128, 4 heads, mlp ratio 4)

def block_forward_flops(batch: int, tokens: int, width: int, mlp_ratio: int = 4) -> int:
    """qkv, proj, fc1, fc2 (2 M K N each) and the attention scores and weighted values (2 B T T width each)."""
    linears = width * 3 * width + width * width + 2 * width * mlp_ratio * width
    return 2 * batch * tokens * linears + 2 * 2 * batch * tokens * tokens * width


def test_block_flops_match_the_hand_count():
    with torch.device("meta"):
        block = Block(128, 4, 4.0, qkv_bias=True)
        x = torch.zeros(3, 17, 128, requires_grad=True)
    forward = block_forward_flops(3, 17, 128)
    assert forward == 2 * 3 * 17 * (128 * 384 + 128 * 128 + 128 * 512 + 512 * 128) + 2 * 2 * 3 * 4 * 17 * 17 * 32
    assert forward_backward_flops(lambda: block(x).sum()) == 3 * forward  # backward = 2x forward


@pytest.mark.parametrize("method", ["mae", "emae"])
def test_step_flops_match_the_hand_count(method):
    cfg = dataclasses.replace(preset_config("fmnist-tiny"), method=method)
    b, n, patch_values = 4, 64, 16  # 32 px, 4 px patches, 1 channel
    seqs, visible = (b, 16) if method == "mae" else (b * 4, 16)  # mae: 75 % masked; emae: 4 parts of 16
    per_seq = (4 * block_forward_flops(seqs, 1 + visible, 128) + 2 * seqs * (1 + visible) * 128 * 64
               + 2 * block_forward_flops(seqs, 1 + n, 64) + 2 * seqs * (1 + n) * 64 * patch_values)
    patch_embed = 2 * b * n * patch_values * 128  # once per image; its backward: the weight's gradient only
    # the self-consistency loss's pair weights: the overlap of the K part masks, (K, B N) by (B N, K), no gradient
    overlap = 2 * 4 * b * n * 4 if method == "emae" else 0
    assert flops_per_iteration(cfg, b) == 3 * per_seq + 2 * patch_embed + overlap


# the table and the records

def _figures() -> list[Figure]:
    config = dict(bench="fmnist tiny", batch=256, repeats=5)
    return [Figure("[1]", "fmnist tiny batch 256: ours / reference", "speedup_vs_reference", Spread(1.05, 0.98, 1.1),
                   "5 interleaved rounds", "mae", "vit_tiny_fmnist", "random 32px images", config, Target(">=", 1.1),
                   "x", details=dict(ours_images_per_s=1000.0)),
            Figure("[2]", "fmnist tiny batch 256: batched / serial", "batched_over_serial", Spread(0.85, 0.8, 0.9),
                   "5 interleaved rounds", "emae", "vit_tiny_fmnist", "random 32px images", config, Target("<=", 0.9))]


def test_table_has_median_spread_target_and_met():
    text = table(_figures())
    lines = text.splitlines()
    assert lines[0].split() == ["figure", "median", "spread", "(min-max)", "target", "met"]
    assert lines[2].split()[-5:] == ["1.05x", "0.98-1.10", ">=", "1.1", "no"]
    assert lines[3].split()[-5:] == ["0.85", "0.80-0.90", "<=", "0.9", "yes"]


def test_records_round_trip_and_report_performance(tmp_path):
    path = tmp_path / "bench" / "records.jsonl"
    written = bench_figures.records(_figures(), 12.5, "python -m benchmarks.run_all")
    append_records(path, written)
    read = read_records(path)
    assert read == written
    first = read[0]
    assert first.protocol == bench_figures.PROTOCOL == report.BENCHMARK and first.value == 1.05
    assert first.extra["median"] == 1.05 and (first.extra["low"], first.extra["high"]) == (0.98, 1.1)
    assert first.extra["target"] == ">= 1.1" and first.extra["met"] is False and read[1].extra["met"] is True
    assert first.command == "python -m benchmarks.run_all" and first.config["repeats"] == 5

    # a second run: the report shows the latest and the range of the medians of both
    later = [dataclasses.replace(r, date="9999-01-01T00:00:00+00:00", value=r.value + 0.01,
                                 extra={**r.extra, "median": r.value + 0.01}) for r in written]
    append_records(path, later)
    out = tmp_path / "report"
    (tmp_path / "none").mkdir()
    assert cli.main(["report", "--records", str(tmp_path / "none"), "--bench-records", str(path), "--out", str(out),
                     "--format", "md,csv"]) == 0
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "## Performance: the benchmarks" in md and "| 1.06x " in md and "1.05-1.06 (2)" in md
    summary = (out / "summary.csv").read_text(encoding="utf-8")
    assert "benchmark" not in summary  # the benchmark records stay out of the runs' tables
    display, numbers = report.performance_frames(read_records(path))
    assert list(numbers["Runs"]) == [2, 2] and list(display["Met"]) == ["no", "yes"]
    assert list(display["Runs agree (±5 %)"]) == ["yes", "yes"]  # 1.05 and 1.06: within 0.5 % of their mean
    # a third run 20 % higher: the medians no longer agree, and the report says by how much
    append_records(path, [dataclasses.replace(r, date="9999-02-01T00:00:00+00:00", value=r.value * 1.2,
                                              extra={**r.extra, "median": r.value * 1.2}) for r in written])
    display, numbers = report.performance_frames(read_records(path))
    assert list(numbers["Runs"]) == [3, 3] and list(display["Runs agree (±5 %)"]) == ["no (±12.2%)", "no (±12.1%)"]


# the run's settings

def test_each_command_resolves_its_preset_then_the_file_then_the_flags(tmp_path):
    assert parse_settings([], "run_all", "", "cpu") == BenchSettings(preset="cpu")  # the dataclass defaults
    gpu = parse_settings([], "bench_gpu", "", "gpu")
    assert (gpu.repeats, gpu.warmup, gpu.square, gpu.compile, gpu.peak_flops) == (5, 3, 8192, True, 989e12)
    (tmp_path / "bench.yaml").write_text("repeats: 7\nwarmup: 1\nquick: true\npreset: cpu\n")
    cfg = parse_settings(["--config", str(tmp_path / "bench.yaml"), "--repeats", "3", "--no-records"], "bench_gpu",
                         "", "gpu")
    # the file's preset replaces the command's; its values replace the preset's; the flags replace the file's
    assert cfg == BenchSettings(records="", repeats=3, warmup=1, quick=True, preset="cpu")
    assert cfg.rounds == "3 interleaved rounds"
    for argv in (["--warmup", "0"], ["--preset", "tpu"], ["--peak-flops", "1e12"]):
        with pytest.raises(SystemExit) as stop:
            parse_settings(argv, "run_all", "", "cpu")
        assert stop.value.code == 2


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit) as stop:
        run_all.main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--records", "--no-records", "--repeats", "--warmup", "--compile", "--quick", "--config"):
        assert flag in out


def test_the_records_get_the_run_config_beside_them(tmp_path):
    path = tmp_path / "bench" / "records.jsonl"
    settings = parse_settings(["--records", str(path), "--repeats", "5"], "run_all", "", "cpu")
    run_all.finish(_figures(), time.perf_counter(), settings)
    assert [r.metric for r in read_records(path)] == ["speedup_vs_reference", "batched_over_serial"]
    saved = json.loads((path.parent / "config.json").read_text())
    assert saved == settings.to_dict() and BenchSettings.from_dict(saved) == settings
    run_all.finish(_figures(), time.perf_counter(), dataclasses.replace(settings, records=""))  # the table only
    assert len(read_records(path)) == 2


@pytest.mark.skipif(not Path(FASHION_MNIST_DIR).is_dir(), reason="Fashion-MNIST not installed (the loader of [4])")
def test_a_quick_run_measures_every_figure_and_writes_its_records(tmp_path, capsys, monkeypatch):
    path = tmp_path / "records.jsonl"
    monkeypatch.setattr(bench_pipeline, "BENCH_ROOT", str(tmp_path / "pipeline"))
    run_all.main(["--quick", "--repeats", "2", "--warmup", "1", "--records", str(path)])
    out = capsys.readouterr().out
    assert "[7] runs the whole pipeline (about 15 minutes on a 2-core CPU): left out of --quick" in out
    assert not (tmp_path / "pipeline").exists()
    read = read_records(path)
    assert sorted({r.extra["figure"] for r in read}) == ["[1]", "[2]", "[3]", "[4]", "[5]", "[6]", "[8]"]
    assert all(r.protocol == bench_figures.PROTOCOL and r.extra["low"] <= r.value <= r.extra["high"] for r in read)
    loader = [r for r in read if r.extra["figure"] == "[4]"]
    assert [(r.metric, r.method) for r in loader] == [("loader_over_step", "emae"), ("loader_over_step", "mae"),
                                                      ("one_by_one_over_batched", "emae")]
    assert all(r.value > 0 for r in loader)
    assert f"{len(read)} records appended to {path}" in out and out.count("\n[") >= len(read)
    saved = BenchSettings.from_dict(json.loads((tmp_path / "config.json").read_text()))
    assert (saved.quick, saved.repeats, saved.warmup, saved.preset) == (True, 2, 1, "cpu")
