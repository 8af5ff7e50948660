"""Fault injection: a run killed, a checkpoint half-written, bad files, a dead peer. Nothing may be lost."""
import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from emae.checkpoint import load_checkpoint, read_weights, save_checkpoint
from emae.cli import main as cli_main
from emae.config import PretrainConfig
from emae.engine import train
from emae.errors import EmaeError

pytestmark = [pytest.mark.fmnist, pytest.mark.slow]

SMALL = ["--subset", "256", "--batch-size", "64", "--num-workers", "0", "--blr", "1e-3", "--warmup-epochs", "1"]


def small_cfg(out, epochs) -> PretrainConfig:
    return PretrainConfig(subset=256, batch_size=64, num_workers=0, blr=1e-3, warmup_epochs=1, epochs=epochs,
                          output_dir=str(out))


def log_lines(out) -> list[dict]:
    """The training steps of ``OUT/log.txt`` (not the online monitor's points)."""
    path = Path(out) / "log.txt"
    entries = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [e for e in entries if "monitor" not in e]


def pretrain_process(out, epochs, *extra, script=None) -> subprocess.Popen:
    args = ["pretrain", *SMALL, "--epochs", str(epochs), "--output-dir", str(out), *extra]
    cmd = [sys.executable, "-c", script, *args] if script else [sys.executable, "-m", "emae", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, proc, timeout=240):
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended early: {proc.communicate()[1][-2000:]}"
        assert time.time() < deadline, "timed out waiting for the run"
        time.sleep(0.02)


def test_sigkill_during_a_step_then_resume_continues_the_same_loss_curve(tmp_path):
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    proc = pretrain_process(killed, 3)
    wait_for(lambda: len(log_lines(killed)) >= 6, proc)  # inside epoch 2, after the epoch-1 checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert load_checkpoint(killed / "checkpoint.pth")["epoch"] == 1
    # the resumed and the reference runs are fresh processes too, as the killed one was: the same threads and
    # state, so that their float arithmetic matches to the last bit whatever earlier tests did in this one
    resumed = subprocess.run([sys.executable, "-m", "emae", "pretrain", "--output-dir", str(killed), "--resume"],
                             capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    whole = pretrain_process(reference, 3)
    _, err = whole.communicate(timeout=240)
    assert whole.returncode == 0, err[-2000:]
    assert [e["loss"] for e in log_lines(killed)] == [e["loss"] for e in log_lines(reference)]
    assert [e["step"] for e in log_lines(killed)] == list(range(1, 13))


SLOW_SAVE = textwrap.dedent("""
    import sys, time, torch
    import emae.checkpoint as checkpoint
    real_save = torch.save
    calls = []

    def slow_save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second checkpoint: write part of it, then stall
            f.write(b"PK\\x03\\x04 partial")
            f.flush()
            time.sleep(600)
        return real_save(obj, f, *args, **kwargs)

    checkpoint.torch.save = slow_save
    from emae.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_sigkill_while_a_checkpoint_is_written_keeps_the_previous_one(tmp_path):
    proc = pretrain_process(tmp_path, 3, script=SLOW_SAVE)
    wait_for(lambda: (tmp_path / "checkpoint.pth").exists() and any(tmp_path.glob(".checkpoint.pth.*.tmp")), proc)
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = load_checkpoint(tmp_path / "checkpoint.pth")  # intact: the partial write went to a temporary file
    assert ckpt["epoch"] == 1 and ckpt["step"] == 4
    assert cli_main(["pretrain", "--output-dir", str(tmp_path), "--resume"]) == 0
    assert load_checkpoint(tmp_path / "checkpoint.pth")["epoch"] == 3
    assert not any(tmp_path.glob(".checkpoint.pth.*.tmp"))
    assert [e["step"] for e in log_lines(tmp_path)] == list(range(1, 13))


@pytest.mark.parametrize("workers", ["0", "1"])
def test_a_corrupt_image_is_one_clear_error_naming_the_file(image_folder, tmp_path, capsys, workers):
    code = cli_main(["pretrain", "--dataset", "images", "--data", str(image_folder), "--batch-size", "32",
                     "--epochs", "1", "--num-workers", workers, "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert err.startswith("error: ") and ("050.png: cannot read image" in err or "060.png: cannot read image" in err)


def test_skip_bad_images_skips_and_counts_them(image_folder, tmp_path):
    code = cli_main(["pretrain", "--dataset", "images", "--data", str(image_folder), "--batch-size", "32",
                     "--epochs", "1", "--warmup-epochs", "0", "--num-workers", "1", "--skip-bad-images",
                     "--output-dir", str(tmp_path)])
    assert code == 0
    log = log_lines(tmp_path)
    assert len(log) == 3 and log[-1]["skipped_images"] == 2


def test_truncated_checkpoint_is_a_clear_error(tmp_path, capsys):
    save_checkpoint({"model": {"w": torch.zeros(1000)}}, tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    code = cli_main(["export", "--checkpoint", str(tmp_path / "cut.pth"), "--to", "timm", "--out",
                     str(tmp_path / "x.pth")])
    err = capsys.readouterr().err
    assert code == 2 and f"{tmp_path / 'cut.pth'}: not a readable checkpoint (truncated or corrupt)" in err
    assert not (tmp_path / "x.pth").exists()


def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path, capsys):
    import torchvision

    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet.pth")
    code = cli_main(["export", "--checkpoint", str(tmp_path / "resnet.pth"), "--to", "timm", "--out",
                     str(tmp_path / "x.pth")])
    assert code == 2
    assert f"{tmp_path / 'resnet.pth'}: not a ViT encoder: the key 'patch_embed.proj.weight' is missing" in \
        capsys.readouterr().err


def test_pickled_objects_are_refused_without_fallback(tmp_path):
    """Official MAE's argparse.Namespace is the one object read; any other, even inside it, is refused."""
    torch.save({"model": {"w": torch.zeros(2)}, "args": argparse.Namespace(output_dir=Path("out"))},
               tmp_path / "official.pth")
    with pytest.raises(EmaeError, match=r"official.pth: refused: it holds pickled Python objects \(pathlib\."):
        load_checkpoint(tmp_path / "official.pth")


def test_record_file_with_a_bad_line_is_a_clear_error(tmp_path, capsys, record):
    (tmp_path / "records.jsonl").write_text(json.dumps(record) + "\n" + '{"method": "mae", \n')
    code = cli_main(["report", "--records", str(tmp_path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and f"{tmp_path / 'records.jsonl'}:2: not valid JSON" in err


def test_export_to_safetensors_and_read_back(tmp_path):
    train(small_cfg(tmp_path, 1))
    assert cli_main(["export", "--checkpoint", str(tmp_path / "checkpoint.pth"), "--to", "timm", "--out",
                     str(tmp_path / "encoder.safetensors")]) == 0
    exported, original = read_weights(tmp_path / "encoder.safetensors"), read_weights(tmp_path / "checkpoint.pth")
    encoder = exported.encoder
    assert set(encoder) == set(original.encoder) and all(torch.equal(encoder[k], original.encoder[k]) for k in encoder)
    assert exported.info.embed_dim == 128 and exported.info.in_chans == 1
    assert exported.arch == original.arch == "vit_tiny_fmnist" and exported.config == original.config


DDP_RANK = textwrap.dedent("""
    import sys
    from emae.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_a_dead_ddp_peer_makes_the_other_process_exit_with_an_error(tmp_path):
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT="29533", WORLD_SIZE="2", OMP_NUM_THREADS="1")
    args = ["pretrain", *SMALL, "--subset", "2048", "--batch-size", "16", "--epochs", "5", "--dist-timeout", "20",
            "--output-dir", str(tmp_path)]
    procs = [subprocess.Popen([sys.executable, "-m", "emae", *args], env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    wait_for(lambda: len(log_lines(tmp_path)) >= 2, procs[0])
    procs[1].send_signal(signal.SIGKILL)
    started = time.time()
    try:
        _, err = procs[0].communicate(timeout=120)
    finally:
        procs[0].kill()
    assert procs[0].returncode != 0
    assert time.time() - started < 120
    assert np.any([word in err for word in ("Connection closed", "Timed out", "timeout", "Connection reset")]), err[-2000:]
