"""The fast linear probe: its heads as one batched product, its loop (evaluations, reads from the device,
progress) and a run through the command line."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from emae.cli import main as cli_main
from emae.errors import EmaeError
from emae.records import read_records
from emae.steps import NonFiniteLossError
from evaluation.features import extract_features
from evaluation.linprobe import (LinearHead, LinearHeads, LinprobeConfig, fit_heads, grid_loss, lars, probe_draws,
                                 run)
from evaluation.readouts import READOUTS
from evaluation.training import cosine_schedule, evaluates

DIM, CLASSES, BLRS = 16, 4, (0.1, 1.0, 10.0)



def _data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random (DIM,) features, off-centre and of uneven scale (so the BatchNorm matters), and labels."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, DIM, generator=g) * 3 + 1, torch.randint(0, CLASSES, (n,), generator=g)


def _config(**values) -> LinprobeConfig:
    return dataclasses.replace(LinprobeConfig(fast=True, blrs=BLRS, epochs=4, warmup_epochs=1, effective_batch=32),
                               **values)


def _independent(seed: int) -> list[LinearHead]:
    """One :class:`LinearHead` per base lr, each its own module, drawn as the batched heads are."""
    torch.manual_seed(seed)
    return [LinearHead(DIM, CLASSES) for _ in BLRS]


def _batched(seed: int) -> LinearHeads:
    torch.manual_seed(seed)
    return LinearHeads(DIM, CLASSES, len(BLRS))


def test_batched_heads_are_the_independent_heads_in_one_product():
    singles, heads = _independent(0), _batched(0)
    assert all(torch.equal(a[1].weight, b.weight) and torch.equal(a[1].bias, b.bias)
               for a, b in zip(singles, heads.linears))  # the same draws
    for head, linear in zip(singles, heads.linears):  # a bias, so that each head's is seen in its own logits
        torch.manual_seed(len(linear.bias))
        bias = torch.randn(CLASSES)
        head[1].bias.data.copy_(bias)
        linear.bias.data.copy_(bias)
    x, y = _data(64)
    logits = heads(x)
    assert logits.shape == (len(BLRS), 64, CLASSES)
    for h, head in enumerate(singles):
        own = head(x)
        torch.testing.assert_close(logits[h], own)
        F.cross_entropy(own, y).backward()  # each head's own loss, alone
    grid_loss(logits, y).backward()
    for head, linear in zip(singles, heads.linears):
        torch.testing.assert_close(linear.weight.grad, head[1].weight.grad)
        torch.testing.assert_close(linear.bias.grad, head[1].bias.grad)
        torch.testing.assert_close(heads.norm.running_mean, head[0].running_mean)
        torch.testing.assert_close(heads.norm.running_var, head[0].running_var)
    assert torch.allclose(grid_loss(logits, y), sum(F.cross_entropy(h, y) for h in logits))


def test_batched_heads_train_as_the_independent_heads_do():
    """A few LARS updates on MAE's schedule: the batched heads and one optimizer against each head on its own."""
    x, y = _data(160)
    lrs = [blr * 32 / 256 for blr in BLRS]
    singles, heads = _independent(1), _batched(1)
    alone = [lars(_Grid([head]), [lr], 0.9, 0.0) for head, lr in zip(singles, lrs)]
    together = lars(heads, lrs, 0.9, 0.0)
    schedules = [cosine_schedule(o, 2, 1, 5, 0.0) for o in (*alone, together)]
    for step in range(10):
        index = torch.arange(step % 5 * 32, (step % 5 + 1) * 32)
        for schedule in schedules:
            schedule.step_update(step)
        for head, optimizer in zip(singles, alone):
            F.cross_entropy(head(x[index]), y[index]).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        grid_loss(heads(x[index]), y[index]).backward()
        together.step()
        together.zero_grad(set_to_none=True)
    for head, linear in zip(singles, heads.linears):
        assert not torch.equal(linear.weight, _batched(1).linears[0].weight)  # trained
        torch.testing.assert_close(linear.weight, head[1].weight, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(linear.bias, head[1].bias, rtol=1e-4, atol=1e-6)
    heads.eval()
    torch.testing.assert_close(heads(x), torch.stack([head.eval()(x) for head in singles]), rtol=1e-4, atol=1e-5)


class _Grid:
    """Stand-in for a grid of the given heads, as :func:`lars` reads it."""

    def __init__(self, heads: list[LinearHead]):
        self.linears = [head[1] for head in heads]


@pytest.mark.parametrize("every, expected", [(3, [3, 6, 7]), (1, list(range(1, 8))), (0, list(range(1, 8))),
                                             (10, [7])])
def test_evaluations_come_at_the_multiples_of_eval_every_and_the_last_epoch(every, expected):
    assert [e for e in range(1, 8) if evaluates(e, 7, every)] == expected
    history = fit_heads(_batched(0), _data(96), _data(40, seed=1), _config(epochs=7, eval_every=every), 32,
                        log=lambda _: None)
    assert [e["epoch"] for e in history] == expected
    assert all(len(e["top1"]) == len(e["top5"]) == len(BLRS) for e in history)


def test_evaluating_leaves_the_training_as_it_is():
    every_epoch = fit_heads(_batched(0), _data(96), _data(40, seed=1), _config(eval_every=1), 32, log=lambda _: None)
    at_the_end = fit_heads(_batched(0), _data(96), _data(40, seed=1), _config(eval_every=4), 32, log=lambda _: None)
    assert at_the_end[-1]["top1"] == every_epoch[-1]["top1"] and at_the_end[-1]["top5"] == every_epoch[-1]["top5"]
    assert at_the_end[-1]["loss"] == pytest.approx(sum(e["loss"] for e in every_epoch) / 4)  # the mean since then


def test_the_loop_reads_from_the_device_only_to_evaluate(monkeypatch, reports):
    reads = []
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _name=name, _real=real: (
            reads.append(_name), _real(self, *a))[1])
    history = fit_heads(_batched(0), _data(96), _data(40, seed=1), _config(epochs=6, eval_every=3), 32,
                        log=lambda _: None)
    assert len(history) == 2 and sorted(reads) == sorted(["item", "tolist", "tolist"] * 2)  # 18 updates
    assert reports == [(e, 6, "epochs", "train") for e in range(7)]


def test_a_non_finite_loss_stops_the_probe_at_the_next_evaluation():
    features, labels = _data(96)
    features[5] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss nan of the probes in epochs 1-2 of 4"):
        fit_heads(_batched(0), (features, labels), _data(40, seed=1), _config(eval_every=2), 32, log=lambda _: None)


def test_sets_trained_side_by_side_are_each_trained_alone():
    """Few-shot draws probed as one grid (their features' columns side by side, their labels the same): each
    draw's history, chosen head and test score are those of the draw probed alone."""
    val, test = _data(80, seed=1), _data(60, seed=2)
    labels = torch.arange(CLASSES).repeat_interleave(6)  # class by class, as few_shot_subsets orders a draw
    draws = [_data(len(labels), seed=10 + g)[0] for g in range(3)]
    spans = ((0, DIM // 2), (0, DIM))  # two read-outs: half the columns, all of them
    cfg = _config(epochs=12, eval_every=12)
    together = probe_draws(torch.cat(draws, dim=1), labels, val, test, CLASSES, spans, cfg, len(labels), 32,
                           last_only=True, log=lambda line: None)
    assert len(together) == 3
    for features, (history, h, entry, scores) in zip(draws, together):
        [(alone_history, alone_h, alone_entry, alone_scores)] = probe_draws(
            features, labels, val, test, CLASSES, spans, cfg, len(labels), 32, last_only=True, log=lambda line: None)
        assert len(history[-1]["top1"]) == len(spans) * len(BLRS)
        for e, alone in zip(history, alone_history, strict=True):
            assert e["top1"] == pytest.approx(alone["top1"]) and e["top5"] == pytest.approx(alone["top5"])
        assert h == alone_h and scores == pytest.approx(alone_scores)
    assert len({tuple(e[-1]["top1"]) for e, *_ in together}) == 3  # the draws differ


def test_too_few_features_for_one_batch_is_an_error():
    with pytest.raises(EmaeError, match=r"20 training images are fewer than one batch of 32"):
        fit_heads(_batched(0), _data(20), _data(40, seed=1), _config(), 32)


def test_feature_extraction_reports_its_batches(reports):
    dataset = torch.utils.data.TensorDataset(torch.randn(10, 3), torch.zeros(10, dtype=torch.long))
    features, labels = extract_features(torch.nn.Identity(), dataset, 4, 0, torch.device("cpu"))
    assert features.shape == (10, 3) and reports == [(b, 3, "batches", "features") for b in range(4)]


@pytest.mark.fmnist
def test_fast_probe_from_the_command_line_writes_its_records(tiny_checkpoint, tmp_path, reports):
    common = ["eval", "linprobe", "--fast", "--checkpoint", str(tiny_checkpoint), "--features-dir",
              str(tmp_path / "features"), "--train-limit", "512", "--val-limit", "256", "--test-limit", "256",
              "--epochs", "15", "--warmup-epochs", "2", "--effective-batch", "128", "--blrs", "1.0", "10.0",
              "--eval-every", "4", "--threads", "1", "--num-workers", "0"]
    assert cli_main([*common, "--output-dir", str(tmp_path / "lp")]) == 0  # the fmnist preset: its grid, few-shot
    top1, top5, *few_shot = read_records(tmp_path / "lp")
    assert (top1.protocol, top1.metric, top5.metric) == ("linprobe", "top1", "top5")
    assert [r.metric for r in few_shot] == ["top1_1shot", "top1_5shot", "top1_10shot", "top1_25shot"]
    for record in few_shot:  # the mean of 3 draws, each chosen on the validation split at the last epoch
        draws = top1.extra["few_shot"][record.metric[5:-4]]["draws"]
        assert len(draws) == 3 and record.value == pytest.approx(sum(d["top1"] for d in draws) / 3)
        assert all(d["val_top1"] == max(c[-1] for cells in d["grid"].values() for c in cells.values()) for d in draws)
    assert set(top1.extra) >= {"mode", "epochs", "batch_size", "readout", "blr", "lr", "epoch", "grid", "selected_on",
                               "reported_on", "val_top1", "train_images", "features_reused", "load_report"}
    assert top1.extra["mode"] == "fast" and top1.extra["epochs"] == 15 and top1.extra["batch_size"] == 128
    assert top1.extra["train_images"] == 512 and top1.extra["features_reused"] is False
    grid = top1.extra["grid"]
    assert set(grid) == set(READOUTS) and all(set(cells) == {"1.0", "10.0"} for cells in grid.values())
    assert top1.extra["evaluated_epochs"] == [4, 8, 12, 15]
    cell = grid[top1.extra["readout"]][str(top1.extra["blr"])][[4, 8, 12, 15].index(top1.extra["epoch"])]
    assert top1.extra["val_top1"] == cell == max(max(c) for cells in grid.values() for c in cells.values())
    assert top1.extra["lr"] == top1.extra["blr"] * 128 / 256
    assert (top1.extra["selected_on"], top1.extra["reported_on"]) == ("fashion-mnist train[50000:60000]",
                                                                      "fashion-mnist test")
    assert top5.value > top1.value > 40  # far above chance (10 %), even on an untrained backbone's features
    assert not (tmp_path / "lp" / "checkpoint.pth").exists()  # the fast probe saves no training state
    assert json.loads((tmp_path / "lp" / "config.json").read_text())["eval_every"] == 4
    phases = [r[3] for r in reports]  # the grid, then one grid of the three draws a shot count
    assert "features" in phases and [r for r in reports if r[3] == "train"] == [(e, 15, "epochs", "train")
                                                                                 for e in range(16)] * (1 + 4)
    assert cli_main([*common, "--output-dir", str(tmp_path / "again")]) == 0
    again, *_ = read_records(tmp_path / "again")
    assert again.extra["features_reused"] is True
    assert again.value == top1.value and again.extra["grid"] == top1.extra["grid"]  # the features cached, alike


@pytest.mark.fmnist
def test_the_full_probe_evaluates_every_few_epochs_too(tiny_checkpoint, tmp_path):
    cfg = LinprobeConfig(checkpoint=str(tiny_checkpoint), output_dir=str(tmp_path), epochs=3, warmup_epochs=1,
                         batch_size=64, effective_batch=128, blrs=(0.1, 1.0), eval_every=2, train_limit=256,
                         val_limit=128, test_limit=64, threads=1, num_workers=0)
    top1, _ = run(cfg)
    history = torch.load(tmp_path / "checkpoint.pth", weights_only=True)["history"]
    assert [e["epoch"] for e in history] == [1, 2, 3] and [e["epoch"] for e in history if "top1" in e] == [2, 3]
    assert top1.extra["mode"] == "full" and top1.extra["val_top1"] == max(history[-1]["top1"])  # chosen at the end
    assert top1.extra["grid"] == {"cls-last": {"0.1": [e["top1"][0] for e in history[1:]],
                                               "1.0": [e["top1"][1] for e in history[1:]]}}
    assert (top1.extra["val_images"], top1.extra["test_images"]) == (128, 64)
