import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from timm.optim import param_groups_weight_decay

from emae import methods
from emae.checkpoint import load_checkpoint, save_checkpoint
from emae.cli import main as cli_main
from emae.config import PretrainConfig
from emae.engine import build_optimizer, train
from emae.errors import EmaeError
from emae.methods import METHODS
from emae.models import build_model
from emae.records import read_records
from emae.steps import NonFiniteLossError

pytestmark = [pytest.mark.fmnist, pytest.mark.slow]


def small(tmp_path, **kw) -> PretrainConfig:
    values = dict(subset=256, epochs=2, warmup_epochs=1, batch_size=64, num_workers=0, blr=1e-3,
                  output_dir=str(tmp_path))
    values.update(kw)
    return PretrainConfig(**values)


def losses(out) -> list[float]:
    return [json.loads(line)["loss"] for line in (Path(out) / "log.txt").read_text().splitlines()]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_short_pretraining_on_fashion_mnist(tmp_path, method):
    summary = train(small(tmp_path, method=method, epochs=1, warmup_epochs=0))
    out = Path(tmp_path)
    log = [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in log)
    if method in ("mae", "random-k", "complementary", "parallel"):
        assert all(e["loss"] == pytest.approx(e["pixel_loss"]) for e in log)
    if method == "consistency":
        assert all(e["loss"] == pytest.approx(e["consistency_loss"]) for e in log)
    ckpt = load_checkpoint(out / "checkpoint.pth")
    assert {"model", "optimizer", "scaler", "epoch", "step", "rng", "config"} <= set(ckpt)
    assert ckpt["epoch"] == 1 and ckpt["step"] == 4 and ckpt["config"]["method"] == method
    assert json.loads((out / "config.json").read_text())["method"] == method
    (record,) = read_records(out / "records.jsonl")
    assert record.protocol == "pretrain" and record.method == method
    assert record.extra["images_seen"] == 256 and record.extra["flops_per_iter"] == summary["flops_per_iter"] > 0


def test_emae_loss_decreases(tmp_path):
    train(small(tmp_path, subset=512, epochs=3, warmup_epochs=1))
    log = losses(tmp_path)
    assert sum(log[-3:]) / 3 < sum(log[:3]) / 3


def test_a_run_started_again_before_its_first_checkpoint_logs_only_its_own_steps(tmp_path):
    tmp_path.joinpath("log.txt").write_text("".join(json.dumps({"step": s, "loss": 9.0}) + "\n" for s in (1, 2, 3)))
    train(small(tmp_path, epochs=1))  # the killed attempt left lines and no checkpoint
    lines = [json.loads(ln) for ln in tmp_path.joinpath("log.txt").read_text().splitlines()]
    assert [ln["step"] for ln in lines] == list(range(1, len(lines) + 1)) and 9.0 not in losses(tmp_path)
    assert all(ln["prediction_spread"] > 0 for ln in lines)


def test_a_log_line_cut_off_by_a_kill_is_dropped_on_resume_and_reported(tmp_path, capsys):
    train(small(tmp_path, epochs=1))
    before = tmp_path.joinpath("log.txt").read_text()
    tmp_path.joinpath("log.txt").write_text(before + json.dumps({"step": 99, "loss": 9.0})[:12])
    train(small(tmp_path, epochs=2), resume=tmp_path / "checkpoint.pth")
    assert "dropped its last line, cut off when the run stopped" in capsys.readouterr().err
    lines = [json.loads(ln) for ln in tmp_path.joinpath("log.txt").read_text().splitlines()]
    assert tmp_path.joinpath("log.txt").read_text().startswith(before)
    assert [ln["step"] for ln in lines] == list(range(1, len(lines) + 1)) and len(lines) == 8


def test_an_unreadable_log_line_before_the_last_is_an_error_that_changes_nothing(tmp_path):
    train(small(tmp_path, epochs=1))
    log = tmp_path.joinpath("log.txt")
    lines = log.read_text().splitlines()
    broken = "\n".join([lines[0], "not json", *lines[1:]]) + "\n"
    log.write_text(broken)
    with pytest.raises(EmaeError, match=r"log\.txt, line 2: not a log entry .*'not json'"):
        train(small(tmp_path, epochs=2), resume=tmp_path / "checkpoint.pth")
    assert log.read_text() == broken


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    train(small(full, epochs=3))
    train(small(part, epochs=1))
    before = losses(part)
    train(small(part, epochs=3), resume=part / "checkpoint.pth")
    assert losses(part)[: len(before)] == before
    assert losses(part) == losses(full)
    a, b = load_checkpoint(full / "checkpoint.pth"), load_checkpoint(part / "checkpoint.pth")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_a_checkpoint_of_rank_seeded_masks_resumes_and_says_so(tmp_path, capsys):
    """Checkpoints written while masks came from a generator seeded by rank hold its state as rng['mask']: they
    resume (nothing draws from that state now), with a note on stderr; new checkpoints have no such entry."""
    train(small(tmp_path, epochs=1))
    path = tmp_path / "checkpoint.pth"
    ckpt = load_checkpoint(path)
    assert set(ckpt["rng"]) <= {"torch", "python", "numpy", "cuda"}
    ckpt["rng"]["mask"] = torch.Generator().manual_seed(0).get_state()
    save_checkpoint(ckpt, path)
    train(small(tmp_path, epochs=2), resume=path)
    assert f"{path}: written when masks came from a generator seeded by rank" in capsys.readouterr().err
    resumed = load_checkpoint(path)
    assert resumed["step"] == 8 and "mask" not in resumed["rng"]


def test_compiled_forward_gives_the_losses_of_the_eager_one(tmp_path):
    """``--compile``: the same run through torch.compile logs the same losses (to fp32 rounding of fused ops)."""
    train(small(tmp_path / "eager", method="emae", epochs=1, warmup_epochs=0))
    train(small(tmp_path / "compiled", method="emae", epochs=1, warmup_epochs=0, compile=True))
    assert losses(tmp_path / "compiled") == pytest.approx(losses(tmp_path / "eager"), rel=1e-4)
    ckpt = load_checkpoint(tmp_path / "compiled" / "checkpoint.pth")
    assert not any(k.startswith("_orig_mod") for k in ckpt["model"])  # the plain model's keys


def test_gradient_accumulation_reaches_the_effective_batch(tmp_path):
    train(small(tmp_path, batch_size=32, effective_batch=128, epochs=1, warmup_epochs=0))
    ckpt = load_checkpoint(tmp_path / "checkpoint.pth")
    assert ckpt["step"] == 2  # 256 images / 128 per optimiser step
    records = read_records(tmp_path / "records.jsonl")
    assert records[0].extra["batch_size"] == 128


def test_non_finite_loss_stops_with_the_step_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    train(small(tmp_path, epochs=1))
    good = load_checkpoint(tmp_path / "checkpoint.pth")
    real = methods.pixel_loss
    calls = {"n": 0}

    def poisoned(pred, *args):
        calls["n"] += pred.device.type != "meta"  # the FLOP count runs the loss once on the meta device
        return real(pred, *args) * (float("nan") if calls["n"] == 3 else 1.0)

    monkeypatch.setattr(methods, "pixel_loss", poisoned)  # the objective's pixel term
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss nan at step 7 \(epoch 2\)"):
        train(small(tmp_path, epochs=2), resume=tmp_path / "checkpoint.pth")
    kept = load_checkpoint(tmp_path / "checkpoint.pth")
    assert kept["step"] == good["step"] == 4
    assert all(torch.equal(good["model"][k], kept["model"][k]) for k in good["model"])


def run_cli(*args) -> tuple[int, str]:
    result = subprocess.run([sys.executable, "-m", "emae", *args], capture_output=True, text=True, timeout=300)
    return result.returncode, result.stderr


@pytest.mark.parametrize("args,message", [
    (["--data", "/nonexistent/fmnist"], "error: /nonexistent/fmnist: data folder not found"),
    (["--parts", "3"], "error: parts K=3 must be >= 2 and divide the number of patches N=64"),
    (["--img-size", "30"], "error: img_size=30 is not divisible by the patch size 4 of vit_tiny_fmnist"),
    (["--preset", "imagenet-vit-q"], "error: unknown preset 'imagenet-vit-q'"),
    (["--method", "beit"], "error: unknown method 'beit'"),
])
def test_bad_input_gets_one_clear_error(tmp_path, capsys, args, message):
    code = cli_main(["pretrain", "--output-dir", str(tmp_path), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(message) and len(err.strip().splitlines()) == 1


def test_resume_refuses_to_change_what_the_run_computes(tmp_path, capsys):
    train(small(tmp_path, epochs=1))
    code = cli_main(["pretrain", "--output-dir", str(tmp_path), "--resume", "--method", "mae"])
    assert code == 2 and "cannot change ['method'] when resuming" in capsys.readouterr().err


def test_optimizer_decays_what_official_mae_decays():
    """MAE's main_pretrain.py groups the parameters with timm's add_weight_decay and no skip list: the 3-D
    cls_token and mask_token decay with the weight matrices; biases and norms (1-D) do not; the fixed sin-cos
    position embeddings do not train. One fused AdamW over both groups."""
    cfg = PretrainConfig()
    model = build_model(cfg.arch, cfg.img_size, cfg.in_chans)
    optimizer = build_optimizer(model, cfg, lr=1e-3)
    names = {id(p): name for name, p in model.named_parameters()}
    groups = {g["weight_decay"]: {names[id(p)] for p in g["params"]} for g in optimizer.param_groups}
    matrices = [f"{stack}.{i}.{layer}.weight" for stack, depth in (("blocks", len(model.blocks)),
                                                                   ("decoder_blocks", len(model.decoder_blocks)))
                for i in range(depth) for layer in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")]
    assert groups[cfg.weight_decay] == {"cls_token", "mask_token", "patch_embed.proj.weight", "decoder_embed.weight",
                                        "decoder_pred.weight", *matrices}
    untrained = {"pos_embed", "decoder_pos_embed"}
    assert groups[0.0] == set(names.values()) - groups[cfg.weight_decay] - untrained
    assert all(name.endswith(".bias") or model.get_parameter(name).ndim == 1 for name in groups[0.0])
    assert not any(model.get_parameter(name).requires_grad for name in untrained)
    assert isinstance(optimizer, torch.optim.AdamW) and all(g["fused"] for g in optimizer.param_groups)


def test_a_run_whose_tokens_were_not_decayed_is_not_resumed(tmp_path, capsys):
    """A checkpoint of the former grouping (cls_token and mask_token without decay)
    has other parameter groups: resuming it is an error naming the checkpoint."""
    train(small(tmp_path, epochs=1))
    path = tmp_path / "checkpoint.pth"
    ckpt = load_checkpoint(path)
    model = build_model("vit_tiny_fmnist", 32, 1)
    former = param_groups_weight_decay(model, 0.05, no_weight_decay_list={"cls_token", "mask_token"})
    ckpt["optimizer"] = torch.optim.AdamW(former).state_dict()
    save_checkpoint(ckpt, path)
    code = cli_main(["pretrain", "--output-dir", str(tmp_path), "--resume", "--epochs", "2"])
    assert code == 2 and f"{path}: its optimizer state does not fit this version's parameter groups" in \
        capsys.readouterr().err


def test_two_process_ddp_run_on_cpu(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "emae", "pretrain", "--subset", "256", "--batch-size", "32", "--epochs", "1",
           "--warmup-epochs", "0", "--num-workers", "0", "--output-dir", str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = load_checkpoint(tmp_path / "checkpoint.pth")
    assert ckpt["step"] == 4  # 256 images / (2 processes x 32)
    (record,) = read_records(tmp_path / "records.jsonl")  # written once, by rank 0
    assert record.extra["batch_size"] == 64


def test_a_time_budget_runs_the_epochs_schedule_by_the_clock():
    from emae.engine import TimeBudget, cosine_schedule

    budget = TimeBudget(seconds=60.0, cap=500)
    assert budget.position(10, 15.0) == 125.0  # a quarter of the budget spent: a quarter of the schedule
    assert budget.position(300, 15.0) == 300.0  # a machine fast enough to make its epochs follows its updates
    assert budget.position(10, 90.0) == 500.0  # never past the schedule's end
    assert not budget.spent(499, 59.9) and budget.spent(12, 60.0) and budget.spent(500, 1.0)
    # a machine that slows down half-way: the schedule stays on the clock and the run stops at the budget
    cfg = PretrainConfig(epochs=4, warmup_epochs=1, blr=1.0, lr=1.0)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = cosine_schedule(optimizer, cfg, budget.cap)
    step, clock, lrs = 0, 0.0, []
    while not budget.spent(step, clock):
        scheduler.step_update(budget.position(step, clock))
        lrs.append(optimizer.param_groups[0]["lr"])
        clock += 0.25 if clock < 30.0 else 0.5
        step += 1
    assert step == 120 + 60 and 60.0 <= clock < 60.0 + 0.5  # 120 updates in 30 s, 60 in the next 30; under one over
    assert lrs[60] == pytest.approx(1.0)  # the warm-up ends at a quarter of the budget, 15 s
    assert lrs[-1] < 0.01 and lrs[:61] == sorted(lrs[:61]) and lrs[60:] == sorted(lrs[60:], reverse=True)


def test_a_budgeted_run_stops_where_its_budget_ends_and_is_saved_finished(tmp_path, capsys):
    cfg = small(tmp_path / "run", epochs=4, batch_size=16, time_budget_s=1e-3)  # 16 updates an epoch, 64 at most
    summary = train(cfg)
    assert ("time budget 0 s: the schedule of 4 epochs (64 updates) follows the training time, and the run ends when "
            "it is spent") in capsys.readouterr().out
    assert summary["steps"] == 1 and summary["epochs_run"] == 1 / 16  # the budget is spent after the first update
    assert len(losses(tmp_path / "run")) == 1
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pth")
    assert (ckpt["epoch"], ckpt["step"], ckpt["total_updates"]) == (4, 1, 1)  # finished: a resume has nothing to do
    (record,) = read_records(tmp_path / "run" / "records.jsonl")
    assert record.extra["time_budget_s"] == 1e-3 and record.extra["iterations"] == 1
    assert train(cfg, resume=tmp_path / "run" / "checkpoint.pth")["steps"] == 1
    free = small(tmp_path / "free", epochs=1, batch_size=16, time_budget_s=1e6)
    assert train(free)["steps"] == 16  # at most its epochs' updates
