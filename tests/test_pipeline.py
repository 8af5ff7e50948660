import argparse
import dataclasses
import importlib
import json
import re
from pathlib import Path

import pytest
import torch

from emae import cli
from emae.config import PretrainConfig
from emae.errors import EmaeError
from emae.models import build_model
from emae.records import append_records
from experiments import pipeline, runner, study
from experiments.pipeline import PipelineConfig, Stage, run_pipeline
from experiments.study import StudyConfig, parse_runs, study_stages
from results.summary import summary_frames
from results.tables import records_frame


def test_a_rerun_skips_finished_stages_and_stops_at_the_first_failure(tmp_path, monkeypatch, capsys):
    ckpt = tmp_path / "mae.pth"
    plan = [
        Stage("report", ("report", "--records", str(tmp_path / "none"), "--out", str(tmp_path / "report"))),
        Stage("mae/export", ("export", "--checkpoint", str(ckpt), "--to", "timm", "--out", str(tmp_path / "x.pth"))),
        Stage("needs-missing", ("report",), needs="a_module_that_is_not_installed"),
    ]
    (tmp_path / "none").mkdir()
    monkeypatch.setattr(pipeline, "stages", lambda cfg: plan)
    cfg = PipelineConfig(root=str(tmp_path / "run"))

    with pytest.raises(EmaeError, match=rf"stage mae/export failed: error: {ckpt}: checkpoint not found"):
        run_pipeline(cfg)
    assert "[ 1/3] report" in capsys.readouterr().out

    torch.save({"model": build_model("vit_tiny_fmnist", 32, 1).state_dict(), "config": PretrainConfig().to_dict()},
               ckpt)
    assert run_pipeline(cfg) == 0
    out = capsys.readouterr().out
    assert "report                 done earlier" in out
    assert "needs-missing          skipped: a_module_that_is_not_installed is not installed" in out
    logs = tmp_path / "run" / "logs"
    assert (logs / "report.log").read_text().count("$ ") == 1  # not run again
    assert (logs / "mae-export.log").read_text().count("$ ") == 2  # failed once, then ran
    assert (tmp_path / "x.pth").exists()


def _parse(stage: Stage):
    """Parse a stage's arguments with its own command's parser, as ``emae`` would."""
    words = next(w for w in cli.COMMANDS if tuple(stage.argv[:len(w)]) == w)
    parser = argparse.ArgumentParser()
    importlib.import_module(cli.COMMANDS[words][0]).add_arguments(parser)
    return parser.parse_args(stage.argv[len(words):])


def test_every_pipeline_stage_parses_with_its_command(tmp_path):
    plan = pipeline.stages(PipelineConfig(root=str(tmp_path), seed=3))
    names = [s.name for s in plan]
    for method in ("mae", "emae"):
        assert names.index(f"{method}/pretrain") < names.index(f"{method}/export") < names.index(f"{method}/knn")
    assert names[-1] == "report"
    # the baselines come first: the untrained backbone of the same preset and seed through every evaluation but
    # the consistency of predictions, and raw pixels under kNN and the probe
    assert names[names.index("data/segmentation") + 1:names.index("mae/pretrain")] == [
        "untrained/pretrain", "untrained/knn", "untrained/linprobe", "pixels/knn", "pixels/linprobe",
        "untrained/finetune", "untrained/detect", "untrained/segment"]
    parsed = {s.name: _parse(s) for s in plan if s.available and not s.budget_from}
    untrained = parsed["untrained/pretrain"]
    assert (untrained.epochs, untrained.seed, untrained.preset) == (0, 3, "fmnist-small")
    assert "subset" not in vars(untrained)  # the preset's 60k images
    checkpoint = str(tmp_path / "untrained" / "pretrain" / "checkpoint.pth")
    assert parsed["untrained/knn"].checkpoint == parsed["untrained/finetune"].checkpoint == checkpoint
    assert parsed["pixels/linprobe"].checkpoint == "pixels"
    if "emae/detect" in parsed:
        assert parsed["emae/detect"].opts == ["train.seed=3", "train.max_iter=120"]
        assert parsed["untrained/detect"].checkpoint == checkpoint
    if "emae/segment" in parsed:
        assert (parsed["emae/segment"].iters, parsed["emae/segment"].seed) == (120, 3)
    encoder = str(tmp_path / "emae" / "export" / "encoder.safetensors")
    assert parsed["emae/export"].out == encoder
    assert parsed["emae/linprobe"].checkpoint == parsed["emae/finetune"].checkpoint == encoder
    pretrain = [s for s in plan if s.name == "emae/pretrain"][0]
    assert pretrain.resume_argv == ("--resume",)
    # a started pre-training continues from its checkpoint, and starts again if it was stopped before writing one
    assert not pretrain.resumes(started=True) and not pretrain.resumes(started=False)
    checkpoint = tmp_path / "emae" / "pretrain" / "checkpoint.pth"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"")
    assert pretrain.resumes(started=True) and not pretrain.resumes(started=False)


def test_emae_pretrains_for_the_wall_time_mae_recorded(tmp_path):
    from test_results import fmnist

    cfg = PipelineConfig(root=str(tmp_path), seed=3)
    emae = next(s for s in pipeline.stages(cfg) if s.name == "emae/pretrain")
    mae_records = tmp_path / "mae" / "pretrain" / "records.jsonl"
    with pytest.raises(EmaeError, match=f"stage emae/pretrain trains for the wall time of the pre-training recorded "
                                        f"in {mae_records}, which does not exist"):
        emae.command(resume=False)
    append_records(mae_records, [fmnist("mae", 4, "pretrain", 0.7, metric="loss", wall_time_s=261.04)])
    argv = emae.command(resume=True)
    assert argv[-3:] == ["--time-budget-s", "261.0", "--resume"]
    parser = argparse.ArgumentParser()
    importlib.import_module("emae.engine").add_arguments(parser)
    args = parser.parse_args(argv[1:])
    assert (args.method, args.time_budget_s, args.seed) == ("emae", 261.0, 3)
    # at equal epochs instead, EMAE trains for the preset's epochs like MAE
    plain = next(s for s in pipeline.stages(dataclasses.replace(cfg, equal_time=False)) if s.name == "emae/pretrain")
    assert "--time-budget-s" not in plain.command(resume=False)


def test_study_plan_and_its_run_specifications(tmp_path):
    assert parse_runs(["mae:1,4", "emae:2"]) == [("mae", 1), ("mae", 4), ("emae", 2)]
    for bad, message in [("mae", "expected METHOD:EPOCHS"), ("byol:4", "expected METHOD:EPOCHS"),
                         ("mae:1,x", "epochs must be integers"), ("emae:0", "epochs must be >= 1")]:
        with pytest.raises(EmaeError, match=message):
            parse_runs([bad])
    plan = study_stages(StudyConfig(root=str(tmp_path), runs=("mae:8", "emae:2"), seeds=(0, 1), preset="fmnist-tiny",
                                    eval_preset="fmnist", pretrain_args="--subset 64"))
    names = [s.name for s in plan]
    # each seed: the untrained backbone and raw pixels, then every run
    assert names[:8] == ["untrained-seed0/pretrain", "untrained-seed0/knn", "untrained-seed0/linprobe",
                         "pixels-seed0/knn", "pixels-seed0/linprobe",
                         "mae-ep8-seed0/pretrain", "mae-ep8-seed0/knn", "mae-ep8-seed0/linprobe"]
    assert len(plan) == 2 * (5 + 2 * 3) + 1 and names[-1] == "report"
    untrained = _parse(plan[0])
    assert (untrained.epochs, untrained.seed, untrained.subset, untrained.preset) == (0, 0, 64, "fmnist-tiny")
    assert _parse(plan[1]).checkpoint == str(tmp_path / "untrained-seed0" / "pretrain" / "checkpoint.pth")
    assert _parse(plan[3]).checkpoint == _parse(plan[4]).checkpoint == "pixels"
    pretrain = _parse(plan[5])
    assert (pretrain.method, pretrain.epochs, pretrain.warmup_epochs, pretrain.seed, pretrain.subset) == (
        "mae", 8, 2, 0, 64)
    emae_seed1 = _parse(plan[names.index("emae-ep2-seed1/pretrain")])
    assert emae_seed1.seed == 1 and emae_seed1.warmup_epochs == 0
    knn, linprobe = _parse(plan[6]), _parse(plan[7])
    assert knn.features_dir == linprobe.features_dir == str(tmp_path / "mae-ep8-seed0" / "features")


def _resolve(cls, argv: list[str]):
    """``cls`` resolved from a command line, as the command's ``main`` resolves it."""
    parser = argparse.ArgumentParser()
    cls.add_arguments(parser)
    return cls.resolve(parser.parse_args(argv))


def test_the_pipeline_command_line_of_today_resolves_to_its_config(tmp_path):
    cfg = _resolve(PipelineConfig, ["--root", str(tmp_path), "--preset", "fmnist-small", "--eval-preset", "fmnist",
                                    "--seed", "2", "--pretrain-args", "--subset 64 --data '/a b'", "--detect-iters",
                                    "3", "--segment-iters", "4", "--no-detection", "--no-segmentation"])
    assert cfg == PipelineConfig(root=str(tmp_path), preset="fmnist-small", seed=2,
                                 pretrain_args="--subset 64 --data '/a b'", detect_iters=3, segment_iters=4,
                                 detection=False, segmentation=False)
    untrained = _parse(pipeline.stages(cfg)[0])
    assert (untrained.subset, untrained.data, untrained.epochs) == (64, "/a b", 0)  # quotes keep a space
    # the adapters' configs are settings: another name reaches the stages without a change of code
    plan = pipeline.stages(dataclasses.replace(PipelineConfig(root=str(tmp_path)), detect_config="my_detector",
                                               segment_config="my_segmenter"))
    argv = {s.name: s.argv for s in plan}
    assert argv["emae/detect"][argv["emae/detect"].index("--config") + 1] == "my_detector"
    assert argv["mae/segment"][argv["mae/segment"].index("--config") + 1] == "my_segmenter"
    for flags, message in [(["--detect-iters", "0"], "detect_iters must be >= 1"),
                           (["--pretrain-args", "--data '/a"], "pretrain_args .*No closing quotation")]:
        with pytest.raises(EmaeError, match=message):
            _resolve(PipelineConfig, flags)


def test_a_pipeline_config_file_gives_values_that_flags_override(tmp_path, monkeypatch):
    root = tmp_path / "run"
    (tmp_path / "pipeline.yaml").write_text(f"root: {root}\nseed: 4\npretrain_args: --subset 64\ndetect_iters: 10\n"
                                            f"detection: false\nsegment_config: my_segmenter\n")
    seen = []
    monkeypatch.setattr(pipeline, "stages", lambda cfg: seen.append(cfg) or [])
    assert cli.main(["pipeline", "--config", str(tmp_path / "pipeline.yaml"), "--seed", "5", "--no-segmentation",
                     "--detection"]) == 0
    expected = PipelineConfig(root=str(root), seed=5, pretrain_args="--subset 64", detect_iters=10,
                              segment_config="my_segmenter", detection=True, segmentation=False)
    assert seen == [expected]
    saved = json.loads((root / "config.json").read_text())
    assert saved == expected.to_dict() and PipelineConfig.from_dict(saved) == expected
    (tmp_path / "bad.yaml").write_text("detect_iters: many\n")
    with pytest.raises(EmaeError, match=r"bad.yaml: detect_iters must be int"):
        _resolve(PipelineConfig, ["--config", str(tmp_path / "bad.yaml")])


def test_a_study_config_file_gives_values_that_flags_override(tmp_path, monkeypatch):
    assert StudyConfig() == _resolve(StudyConfig, [])  # the committed study's settings
    assert (StudyConfig.runs, StudyConfig.seeds, StudyConfig.preset) == (("mae:1,2,4", "emae:1,2"), (0, 1, 2),
                                                                         "fmnist-small")
    root = tmp_path / "study"
    (tmp_path / "study.yaml").write_text(f"root: {root}\nruns: ['mae:2', 'emae:1,2']\nseeds: [3]\n"
                                         f"preset: fmnist-tiny\npretrain_args: --subset 64\n")
    seen = []
    monkeypatch.setattr(study, "study_stages", lambda cfg: seen.append(cfg) or [])
    assert cli.main(["study", "--config", str(tmp_path / "study.yaml"), "--seeds", "4", "5", "--eval-preset",
                     "fmnist"]) == 0
    expected = StudyConfig(root=str(root), runs=("mae:2", "emae:1,2"), seeds=(4, 5), preset="fmnist-tiny",
                           pretrain_args="--subset 64")
    assert seen == [expected]
    saved = json.loads((root / "config.json").read_text())
    assert saved["seeds"] == [4, 5] and StudyConfig.from_dict(saved) == expected
    # the runs are checked as --runs is, whether a flag or the file gives them
    with pytest.raises(EmaeError, match="--runs 'emae:0': epochs must be >= 1"):
        _resolve(StudyConfig, ["--config", str(tmp_path / "study.yaml"), "--runs", "mae:1", "emae:0"])
    (tmp_path / "bad.yaml").write_text("runs: ['byol:4']\n")
    with pytest.raises(EmaeError, match="--runs 'byol:4': expected METHOD:EPOCHS"):
        _resolve(StudyConfig, ["--config", str(tmp_path / "bad.yaml")])


def test_summary_puts_settings_side_by_side_with_mean_and_std():
    from test_results import fmnist

    records = [fmnist("mae", 4, value=70.0, seed=0), fmnist("mae", 4, value=72.0, seed=1),
               fmnist("emae", 4, value=75.0, seed=0),
               fmnist("emae", 4, protocol="pretrain", metric="loss", value=0.5, wall_time_s=120.0),
               fmnist("mae", 4, protocol="consistency", metric="pairwise_l1", value=0.000456),
               # stopped by its time budget: at most the config's epochs
               fmnist("emae", 4, value=73.0, extra={"time_budget_s": 274.0}),
               # an analysis of that run, which carries the budget in the config it inherited
               fmnist("emae", 4, protocol="consistency", metric="pairwise_l1", value=0.002,
                      config={"time_budget_s": 274.0})]
    display, numbers = summary_frames(records_frame(records))
    assert list(display.columns) == ["protocol", "metric", "dataset", "MAE, 4 ep", "EMAE, 4 ep",
                                     "EMAE in 274 s, ≤ 4 ep"]
    rows = {(r.protocol, r.metric): r for r in display.itertuples(index=False)}
    assert rows[("linprobe", "top1")][3:] == ("71.00 ± 1.41", "75.00", "73.00")
    assert rows[("pretrain", "wall time (s)")][3:] == ("-", "120.00", "-")
    assert rows[("consistency", "pairwise_l1")][3:] == ("0.000456", "-", "0.002")
    assert numbers.loc[(numbers["setting"] == "MAE, 4 ep") & (numbers["protocol"] == "linprobe"), "n"].tolist() == [2]


@pytest.mark.fmnist
def test_a_running_stage_shows_its_progress_and_the_summary_every_stage_time(tmp_path, monkeypatch, capsys):
    """Stages run in children of the fork server, in the caller's folder (relative paths), with the progress
    they report on their line; the summary ends with every stage's time."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runner, "PLAIN_EVERY_S", 0.0)  # not a terminal: a line at every poll
    plan = [Stage("mae/pretrain", ("pretrain", "--preset", "fmnist-tiny", "--method", "mae", "--subset", "512",
                                   "--epochs", "2", "--batch-size", "16", "--num-workers", "0", "--output-dir",
                                   "run/mae"))]
    assert runner.run_stages(plan, Path("state"), PipelineConfig(root="state"), summary=lambda root: "SUMMARY") == 0
    out = capsys.readouterr().out
    shown = re.findall(r"\[ 1/1\] mae/pretrain +running: pretrain (\d+)/64 steps", out)
    assert shown and all(0 < int(done) <= 64 for done in shown)
    assert re.search(r"\[ 1/1\] mae/pretrain +done in \d+ s", out)
    assert "SUMMARY" in out and re.search(r"\| mae/pretrain \| \d+ \|", out)
    assert (tmp_path / "run" / "mae" / "checkpoint.pth").is_file() and (tmp_path / "state" / "pipeline.json").is_file()
    assert (tmp_path / "state" / "logs" / "mae-pretrain.log").read_text().startswith("$ emae pretrain --preset")
