"""The runner's schedule (experiments.runner.run_plan): which stage waits for which, how many run at a time and on
how many threads, and what a failure stops. The stages here are stand-ins (forked processes that note when they
start and end); tests/test_pipeline.py and tests/test_executor.py run real ones."""
import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from emae.errors import EmaeError
from experiments.pipeline import PipelineConfig, stages
from experiments.runner import State, Stage, run_plan, stage_needs, stage_threads


def test_stages_wait_for_what_they_read_and_the_report_for_every_stage(tmp_path):
    """The pipeline's needs follow the paths each stage reads: the export its pre-training's checkpoint, kNN the
    export, the probe kNN's features, the detection the scenes and the checkpoint, EMAE's pre-training MAE's
    record (its time budget); the report waits for every stage before it."""
    plan = stages(PipelineConfig(root=str(tmp_path)))
    needs = stage_needs(plan)
    assert needs["mae/export"] == ("mae/pretrain",)
    assert needs["mae/knn"] == ("mae/export",)
    assert needs["mae/linprobe"] == ("mae/export", "mae/knn")
    assert needs["mae/finetune"] == ("mae/export",)
    assert needs["mae/detect"] == ("data/detection", "mae/pretrain")
    assert needs["pixels/linprobe"] == ("pixels/knn",)
    assert needs["emae/pretrain"] == ("mae/pretrain",)
    assert needs["mae/pretrain"] == () and needs["data/detection"] == ()
    assert needs["report"] == tuple(s.name for s in plan[:-1])
    assert [s.name for s in plan if s.exclusive] == ["untrained/pretrain", "mae/pretrain", "emae/pretrain"]


class StandIns:
    """A fork-server stand-in for run_plan: each stage a forked process that appends its start and end (time, and the
    threads it was given) to ``events``, sleeps the seconds its argv names and exits with the code it names (an
    ``error:`` line in its log first)."""

    def __init__(self, events: Path):
        self.events = events

    def Process(self, target, args, name):  # noqa: N802 (multiprocessing's name)
        return multiprocessing.get_context("fork").Process(target=_stand_in, args=(self.events, name, *args),
                                                           name=name)


def _stand_in(events, name, argv, log, progress_file, cwd, environ, threads, launch):
    def note(event):
        with open(events, "a") as f:
            f.write(json.dumps({"stage": name, "event": event, "t": time.monotonic(), "threads": threads}) + "\n")

    note("start")
    time.sleep(float(argv[1]))
    code = int(argv[2])
    if code:
        with open(log, "a") as f:
            f.write(f"error: {name} broke\n")
    note("end")
    os._exit(code)


def stand_in(name: str, seconds: float, code: int = 0, reads: str = "", writes: str = "", exclusive: bool = False):
    argv = ("sleep", str(seconds), str(code), "--output-dir", writes or f"out/{name}", *(("--data", reads) if reads
                                                                                        else ()))
    return Stage(name, argv, exclusive=exclusive)


def timeline(events: Path) -> dict[str, dict]:
    spans: dict[str, dict] = {}
    for line in events.read_text().splitlines():
        event = json.loads(line)
        spans.setdefault(event["stage"], {"threads": event["threads"]})[event["event"]] = event["t"]
    return spans


def overlap(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


def test_two_stages_run_side_by_side_on_their_share_of_the_cores_and_a_pretraining_alone(tmp_path):
    plan = [stand_in("a/pretrain", 0.3, writes="out/a", exclusive=True),
            stand_in("a/knn", 1.0, reads="out/a"),
            stand_in("a/detect", 1.0, reads="out/a"),
            stand_in("a/segment", 0.2, reads="out/a"),
            stand_in("b/pretrain", 0.3, exclusive=True),
            stand_in("report", 0.1)]
    events, state = tmp_path / "events.jsonl", State(tmp_path / "pipeline.json")
    run_plan(StandIns(events), plan, tmp_path, state, jobs=2)
    spans = timeline(events)
    assert overlap(spans["a/knn"], spans["a/detect"])  # two at a time ...
    assert not overlap(spans["a/segment"], spans["a/knn"]) or not overlap(spans["a/segment"], spans["a/detect"])
    assert spans["a/pretrain"]["end"] <= min(spans[s]["start"] for s in ("a/knn", "a/detect", "a/segment"))
    assert spans["b/pretrain"]["start"] >= max(spans[s]["end"] for s in ("a/knn", "a/detect", "a/segment"))
    assert spans["report"]["start"] >= spans["b/pretrain"]["end"]
    assert {s: spans[s]["threads"] for s in spans} == {  # ... on their share of the cores; a pre-training on all
        "a/pretrain": 0, "a/knn": stage_threads(2), "a/detect": stage_threads(2), "a/segment": stage_threads(2),
        "b/pretrain": 0, "report": stage_threads(2)}
    assert stage_threads(1) == 0 and stage_threads(2) >= 1
    assert set(state.data["done"]) == {s.name for s in plan}
    # the wall time: less than the stages' seconds added up, as two ran side by side
    assert max(s["end"] for s in spans.values()) - min(s["start"] for s in spans.values()) <= state.data["wall"]
    assert state.data["wall"] < sum(state.data["done"].values())


def test_one_at_a_time_runs_the_stages_in_plan_order(tmp_path):
    plan = [stand_in("a/knn", 0.2), stand_in("b/knn", 0.2), stand_in("c/knn", 0.2)]
    events = tmp_path / "events.jsonl"
    run_plan(StandIns(events), plan, tmp_path, State(tmp_path / "pipeline.json"), jobs=1)
    spans = timeline(events)
    assert spans["a/knn"]["end"] <= spans["b/knn"]["start"] and spans["b/knn"]["end"] <= spans["c/knn"]["start"]
    assert {s["threads"] for s in spans.values()} == {0}


def test_after_a_failure_no_stage_starts_and_the_running_one_finishes(tmp_path, capsys):
    plan = [stand_in("a/knn", 0.2, code=3), stand_in("b/knn", 1.5), stand_in("c/knn", 0.1)]
    events, state = tmp_path / "events.jsonl", State(tmp_path / "pipeline.json")
    with pytest.raises(EmaeError, match="stage a/knn failed: error: a/knn broke"):
        run_plan(StandIns(events), plan, tmp_path, state, jobs=2)
    spans = timeline(events)
    assert set(spans) == {"a/knn", "b/knn"} and "end" in spans["b/knn"]  # c never started, b ran to its end
    assert set(state.data["done"]) == {"b/knn"} and set(state.data["failed"]) == {"a/knn"}
    assert state.data["started"] == ["a/knn", "b/knn"]
    out = capsys.readouterr().out
    assert "[ 1/3] a/knn                  FAILED after" in out and "[ 2/3] b/knn                  done in" in out

    # the same plan again, the failure mended: the finished stage is skipped, the others run
    plan[0] = stand_in("a/knn", 0.1)
    run_plan(StandIns(events), plan, tmp_path, state, jobs=2)
    assert set(state.data["done"]) == {"a/knn", "b/knn", "c/knn"} and not state.data["failed"]
    assert "[ 2/3] b/knn                  done earlier" in capsys.readouterr().out
