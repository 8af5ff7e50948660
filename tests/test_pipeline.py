import pytest
import torch

from emae import pipeline
from emae.config import PretrainConfig
from emae.errors import EmaeError
from emae.models import build_model
from emae.pipeline import PipelineConfig, Stage, run_pipeline


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
