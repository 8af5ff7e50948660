"""emae.progress: what a running command reports, and the line its launcher shows."""
from emae import progress


def test_reports_reach_the_file_and_read_back_as_a_line_with_the_time_left(tmp_path, monkeypatch):
    path = tmp_path / "stage.progress"
    progress.report(1, 10)  # no EMAE_PROGRESS: nothing is written anywhere
    monkeypatch.setenv(progress.ENV, str(path))
    assert progress.read(path) is None
    clock = iter([100.0, 100.2, 130.0, 130.5])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(progress, "_last_write", 0.0)
    progress.report(200, 1000, "steps", "pretrain")  # a resumed run: its phase starts at step 200
    progress.report(210, 1000, "steps", "pretrain")  # within a second of the last write: not written
    assert progress.read(path)["done"] == 200
    progress.report(500, 1000, "steps", "pretrain")
    entry = progress.read(path)
    assert entry == {"done": 500, "total": 1000, "unit": "steps", "phase": "pretrain", "elapsed_s": 30.0, "start": 200}
    # 300 steps in 30 s, 500 to go: 50 s (the steps before the resume do not count as done in those 30 s)
    assert progress.describe(entry) == "pretrain 500/1000 steps, ~50 s left"
    progress.report(1000, 1000, "steps", "pretrain")  # the last report is always written
    assert progress.describe(progress.read(path)) == "pretrain 1000/1000 steps"
    assert progress.format_seconds(75) == "1 min 15 s" and progress.describe(None) == ""
