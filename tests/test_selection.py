"""Selection on held-out data: the validation split is carved from the training images and never meets them, every
choice (k, read-out, learning rate, epoch) is made on it, and the test split is scored once, with the choice, so
that what a record reports is never what chose."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from emae.checkpoint import LoadReport
from emae.errors import EmaeError
from emae.knn import knn_scores
from evaluation import finetune, knn, linprobe, training
from evaluation.common import EvalSplits, eval_datasets
from evaluation.features import FeatureSplits, few_shot_subsets
from evaluation.finetune import FinetuneConfig
from evaluation.knn import KnnConfig
from evaluation.linprobe import LinprobeConfig

CLASSES = 4


def _toy(n: int, seed: int, dim: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` features around one of CLASSES centres, noisy enough that neighbours of another class are common."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (n,), generator=g)
    centres = torch.eye(dim)[:CLASSES] * 2
    return centres[labels] + torch.randn(n, dim, generator=g) * 1.5, labels


def _features(train, val, test, readouts: dict[str, tuple[int, int]], default: str) -> FeatureSplits:
    splits = EvalSplits(*(TensorDataset(*split) for split in (train, val, test)), CLASSES, "toy train[400:600]",
                        "toy test")
    return FeatureSplits(train, val, test, readouts, default, splits, LoadReport((), (), (), (), None), False, None,
                         "pixels")


def _top1(scores: torch.Tensor, labels: torch.Tensor) -> float:
    return (scores.argmax(1) == labels).float().mean().item() * 100


@pytest.mark.fmnist
def test_fashion_mnist_holds_out_the_last_10k_training_images():
    splits = eval_datasets(KnnConfig(checkpoint="pixels", train_limit=20000), None, None, 1)
    assert list(splits.train.indices) == list(range(20000)) and list(splits.val.indices) == list(range(50000, 60000))
    assert (splits.val_name, splits.test_name, len(splits.test)) == ("fashion-mnist train[50000:60000]",
                                                                     "fashion-mnist test", 10000)
    assert len(eval_datasets(KnnConfig(checkpoint="pixels"), None, None, 1).train) == 50000  # all the rest
    with pytest.raises(EmaeError, match=r"train_limit 50001 would overlap the validation split "
                                        r"fashion-mnist train\[50000:60000\]"):
        eval_datasets(KnnConfig(checkpoint="pixels", train_limit=50001), None, None, 1)


def _folders(root, splits: dict[str, int]) -> None:
    for split, count in splits.items():
        for label in range(2):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("L", (8, 8), 40 * label + i).save(folder / f"{i:02d}.png")


def test_class_folders_hold_out_the_last_share_of_each_class_or_a_folder_of_their_own(tmp_path):
    _folders(tmp_path, {"train": 10, "val": 3, "held": 2})
    common = dict(checkpoint="pixels", dataset="imagefolder", data=str(tmp_path), mean=(0.5,), std=(0.5,))
    splits = eval_datasets(KnnConfig(val_fraction=0.2, **common), None, None, 1)
    files = [Path(path).relative_to(tmp_path / "train").as_posix() for path, _ in splits.val.dataset.samples]
    assert [files[i] for i in splits.val.indices] == ["class0/08.png", "class0/09.png", "class1/08.png",
                                                       "class1/09.png"]  # the last 2 of each class
    assert set(splits.train.indices).isdisjoint(splits.val.indices) and len(splits.train) == 16
    assert len(splits.test) == 6 and splits.val_name == f"{tmp_path / 'train'}: last 0.2 of each class"
    own = eval_datasets(KnnConfig(val_split="held", **common), None, None, 1)
    assert (len(own.train), len(own.val), own.val_name) == (20, 4, str(tmp_path / "held"))
    with pytest.raises(EmaeError, match="val_split 'val' must be a folder of its own"):
        KnnConfig(val_split="val", **common).validate()
    with pytest.raises(EmaeError, match="train_limit 17 would overlap the validation split"):
        eval_datasets(KnnConfig(val_fraction=0.2, train_limit=17, **common), None, None, 1)


def test_knn_chooses_k_on_validation_however_the_test_labels_read(tmp_path, monkeypatch):
    """Test labels made to agree with another k's predictions (that k would score 100 % on them) leave the
    choice and the validation grid as they were: the record reports the validation-best k's test accuracy."""
    train, val, test = _toy(400, 0), _toy(200, 1), _toy(200, 2)
    ks, state = (1, 5, 25), {"test": test}
    monkeypatch.setattr(knn, "evaluation_features", lambda run, cache: _features(
        train, val, state["test"], {"pixels": (0, 8)}, "pixels"))
    (first,) = knn.run(KnnConfig(checkpoint="pixels", ks=ks, output_dir=str(tmp_path / "a")))
    chosen = first.extra["k"]
    val_top1 = {str(k): _top1(knn_scores(*train, val[0], CLASSES, k), val[1]) for k in ks}
    assert first.extra["grid"] == val_top1 and chosen == max(ks, key=lambda k: val_top1[str(k)])
    assert first.value == _top1(knn_scores(*train, test[0], CLASSES, chosen), test[1])
    other = next(k for k in ks if k != chosen)
    adversarial = knn_scores(*train, test[0], CLASSES, other).argmax(1)
    assert (adversarial != knn_scores(*train, test[0], CLASSES, chosen).argmax(1)).any()  # they disagree
    state["test"] = (test[0], adversarial)
    (second,) = knn.run(KnnConfig(checkpoint="pixels", ks=ks, output_dir=str(tmp_path / "b")))
    assert second.extra["k"] == chosen and second.extra["grid"] == first.extra["grid"]
    assert second.value == _top1(knn_scores(*train, test[0], CLASSES, chosen), adversarial) < 100
    assert (second.extra["selected_on"], second.extra["reported_on"]) == ("toy train[400:600]", "toy test")


def _two_rules(n: int, seed: int, rule: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 8) features labelled by the argmax of columns 0:4 (rule "a"), of columns 4:8 ("b"), or half by each."""
    x = torch.randn(n, 8, generator=torch.Generator().manual_seed(seed))
    a, b = x[:, :4].argmax(1), x[:, 4:].argmax(1)
    return x, {"a": a, "b": b, "half": torch.where(torch.arange(n) < n // 2, a, b)}[rule]


def test_the_probe_chooses_the_readout_validation_prefers_where_test_prefers_the_other(tmp_path, monkeypatch):
    """Training images labelled half by rule a (read-out "cls-last", columns 0:4), half by rule b ("avg-last",
    columns 4:8); validation by rule a, test by rule b. The cls head wins on validation and is reported, near
    chance on test, though the avg head would have scored far higher there."""
    train, val, test = _two_rules(2048, 0, "half"), _two_rules(1000, 1, "a"), _two_rules(1000, 2, "b")
    monkeypatch.setattr(linprobe, "evaluation_features", lambda run, cache: _features(
        train, val, test, {"cls-last": (0, 4), "avg-last": (4, 8)}, "avg-last"))
    cfg = LinprobeConfig(checkpoint="pixels", fast=True, readouts=("cls-last", "avg-last"), blrs=(1.0, 10.0),
                         epochs=10, warmup_epochs=1, effective_batch=256, eval_every=5, shots=(5,), shot_subsets=2,
                         output_dir=str(tmp_path))
    top1, top5, few = linprobe.run(cfg)
    grid = top1.extra["grid"]
    assert top1.extra["readout"] == "cls-last" and max(map(max, grid["cls-last"].values())) > 60
    assert max(map(max, grid["avg-last"].values())) < 50
    assert top1.extra["val_top1"] == max(max(cell) for cells in grid.values() for cell in cells.values())
    assert top1.value < 40  # rule a's head on rule b's labels: near the 25 % of chance
    assert few.metric == "top1_5shot" and len(top1.extra["few_shot"]["5"]["draws"]) == 2
    for draw in top1.extra["few_shot"]["5"]["draws"]:
        assert draw["val_top1"] == max(cell[-1] for cells in draw["grid"].values() for cell in cells.values())
        assert draw["val_top1"] == draw["grid"][draw["readout"]][str(draw["blr"])][-1]


def test_few_shot_draws_are_per_class_distinct_and_repeatable():
    labels = torch.arange(40) % CLASSES
    draws = few_shot_subsets(labels, CLASSES, 3, 3, seed=0)
    assert all(len(d) == 12 and torch.bincount(labels[d]).tolist() == [3] * CLASSES for d in draws)
    assert all(labels[d].tolist() == [c for c in range(CLASSES) for _ in range(3)] for d in draws)  # class by class
    assert not torch.equal(draws[0], draws[1]) and all(torch.equal(a, b) for a, b in zip(
        draws, few_shot_subsets(labels, CLASSES, 3, 3, seed=0)))
    with pytest.raises(EmaeError, match="11 images per class: class 0 has only 10 training images"):
        few_shot_subsets(labels, CLASSES, 11, 1, seed=0)


@pytest.mark.fmnist
def test_fine_tuning_evaluates_validation_each_epoch_and_test_once(tiny_checkpoint, tmp_path, monkeypatch):
    seen = []

    def counted(model, loader, *args, **kwargs):
        seen.append(len(loader.dataset))
        return real(model, loader, *args, **kwargs)

    real = training.evaluate
    monkeypatch.setattr(training, "evaluate", counted)
    monkeypatch.setattr(finetune, "evaluate", counted)
    cfg = FinetuneConfig(checkpoint=str(tiny_checkpoint), output_dir=str(tmp_path), epochs=2, warmup_epochs=0,
                         batch_size=32, effective_batch=32, mixup=0.0, cutmix=0.0, auto_augment="", reprob=0.0,
                         drop_path=0.0, train_limit=128, val_limit=96, test_limit=64, threads=1, num_workers=0)
    top1, _ = finetune.run(cfg)
    assert seen == [96, 96, 64]  # validation after each epoch, the test split once at the end
    assert (top1.extra["selected_on"], top1.extra["reported_on"]) == ("fashion-mnist train[50000:60000]",
                                                                      "fashion-mnist test")
    assert top1.extra["selected"] == {"epoch": 2}
