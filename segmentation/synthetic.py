"""``emae data segmentation``: a small segmentation dataset of real images, in ADE20K's layout.

Each scene is a grey ``size`` x ``size`` image: a smooth noisy background with 2 to 4 Fashion-MNIST items,
each at a random scale and a random place inside its own quadrant of the scene (so items do not overlap).
An item's pixels brighter than ``ITEM_THRESHOLD`` are pasted and labelled with the item's class;
everything else is background. Training scenes take their items from Fashion-MNIST's training set,
validation scenes from its test set.

Labels: 0 is background, 1-10 the Fashion-MNIST classes (``CLASSES``). Unlike ADE20K, whose label 0
("other") is ignored through ``reduce_zero_label=True``, background here is a class that is trained and
scored (``reduce_zero_label=False``), so predicting background everywhere has a well-defined score
(:func:`all_background_scores`), the baseline a trained model must beat.

Layout (ADE20K's ``ADEChallengeData2016``): ``images/{training,validation}/*.jpg`` and
``annotations/{training,validation}/*.png`` with the same stems, plus ``meta.json`` (the dataset's name
``fmnist-scenes``, the generation settings, class names and the validation split's all-background scores).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from emae import settings
from emae.data import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, FashionMNIST, generated_dataset
from emae.errors import EmaeError
from emae.records import SCENES

CLASSES = ("background",) + FASHION_MNIST_CLASSES
SPLITS = {"training": True, "validation": False}  # folder name -> from Fashion-MNIST's training set
ITEM_THRESHOLD = 50  # an item's pixel (0-255) above this is pasted and labelled
ITEMS_PER_SCENE = (2, 4)
ITEM_SCALE = (0.8, 1.15)  # item side relative to Fashion-MNIST's 28 px (at most a quadrant of 64 px)


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random grey field (a 4x4 grid of levels in [0, 60] upsampled) plus pixel noise."""
    coarse = Image.fromarray(rng.uniform(0, 60, (4, 4)).astype(np.float32), mode="F")
    field = np.asarray(coarse.resize((size, size), Image.BILINEAR))
    return np.clip(field + rng.normal(0, 8, (size, size)), 0, 255)


def make_scene(items: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
               size: int) -> tuple[np.ndarray, np.ndarray]:
    """One scene from up to 4 items (N, 28, 28) uint8 and their labels (N,): (image, annotation), uint8."""
    image = background(rng, size)
    annotation = np.zeros((size, size), np.uint8)
    half = size // 2
    quadrants = rng.permutation(4)[:len(items)]
    for item, label, quadrant in zip(items, labels, quadrants):
        side = min(half, int(round(28 * rng.uniform(*ITEM_SCALE))))
        pixels = np.asarray(Image.fromarray(item).resize((side, side), Image.BILINEAR))
        top, left = half * (quadrant // 2), half * (quadrant % 2)
        y, x = top + rng.integers(0, half - side + 1), left + rng.integers(0, half - side + 1)
        mask = pixels > ITEM_THRESHOLD
        image[y:y + side, x:x + side][mask] = pixels[mask]
        annotation[y:y + side, x:x + side][mask] = label + 1
    return image.round().astype(np.uint8), annotation


def write_split(out: Path, split: str, dataset: FashionMNIST, count: int, size: int,
                rng: np.random.Generator) -> None:
    images_dir, annotations_dir = out / "images" / split, out / "annotations" / split
    images_dir.mkdir(parents=True)
    annotations_dir.mkdir(parents=True)
    for i in range(count):
        n = rng.integers(ITEMS_PER_SCENE[0], ITEMS_PER_SCENE[1] + 1)
        picks = rng.integers(0, len(dataset.images), size=n)
        image, annotation = make_scene(dataset.images[picks], dataset.targets[picks].numpy(), rng, size)
        stem = f"{split}_{i:06d}"
        Image.fromarray(image, mode="L").save(images_dir / f"{stem}.jpg", quality=95)
        Image.fromarray(annotation, mode="L").save(annotations_dir / f"{stem}.png")


def all_background_scores(annotations_dir: str | Path, num_classes: int = len(CLASSES)) -> dict[str, float]:
    """mIoU, mAcc and aAcc (percent, as mmseg's IoUMetric) of predicting background (0) everywhere.

    As IoUMetric, a class absent from the ground truth is left out of the means; background's IoU is
    then the background fraction of all pixels, every other present class scores 0.
    """
    counts = np.zeros(num_classes, np.int64)
    for path in sorted(Path(annotations_dir).glob("*.png")):
        counts += np.bincount(np.asarray(Image.open(path)).ravel(), minlength=num_classes)[:num_classes]
    if counts.sum() == 0:
        raise EmaeError(f"{annotations_dir}: no annotation (.png) found")
    present = counts > 0
    background_fraction = counts[0] / counts.sum()
    iou = np.where(np.arange(num_classes) == 0, background_fraction, 0.0)[present]
    acc = np.where(np.arange(num_classes) == 0, 1.0, 0.0)[present]
    return {"mIoU": 100 * float(iou.mean()), "mAcc": 100 * float(acc.mean()), "aAcc": 100 * float(background_fraction)}


def generate(out: str | Path, fashion_mnist: str | Path = FASHION_MNIST_DIR, train: int = 2000, val: int = 200,
             size: int = 64, seed: int = 0) -> dict:
    """Write the dataset to ``out`` (built beside it, then renamed into place); returns its ``meta.json``.

    An existing ``out`` made with the same settings is kept as it is; one made otherwise is an error.
    """
    out = Path(out)
    settings = {"train": train, "val": val, "size": size, "seed": seed, "items_per_scene": list(ITEMS_PER_SCENE),
                "item_scale": list(ITEM_SCALE), "item_threshold": ITEM_THRESHOLD}
    if size < 56 or train < 1 or val < 1:
        raise EmaeError(f"need size >= 56 (a Fashion-MNIST item per quadrant) and at least one scene per split, "
                        f"got size={size}, train={train}, val={val}")

    def write(folder: Path) -> dict:
        rng = np.random.default_rng(seed)
        for split, from_train in SPLITS.items():
            write_split(folder, split, FashionMNIST(fashion_mnist, train=from_train), train if from_train else val,
                        size, rng)
        return {"name": SCENES, "classes": list(CLASSES), "reduce_zero_label": False,
                "all_background_val": all_background_scores(folder / "annotations" / "validation")}

    return generated_dataset(out, settings, "segmentation", write)


@dataclass(frozen=True)
class SegmentationDataConfig(settings.CommandConfig):
    """``emae data segmentation``'s config: defaults < ``--config FILE`` < flags (the folder's ``meta.json``
    keeps the settings the scenes were made with)."""

    help_for: ClassVar[dict[str, str]] = {
        "out": "dataset folder to create, in ADE20K's layout (required)",
        "fashion_mnist": "folder of Fashion-MNIST's idx files", "train": "training scenes",
        "val": "validation scenes", "size": "scene side in pixels"}

    out: str = ""
    fashion_mnist: str = FASHION_MNIST_DIR
    train: int = 2000
    val: int = 200
    size: int = 64
    seed: int = 0

    def validate(self) -> "SegmentationDataConfig":
        settings.require(self, ("out",))
        return self


def add_arguments(parser: argparse.ArgumentParser) -> None:
    SegmentationDataConfig.add_arguments(parser)


def main(args: argparse.Namespace) -> int:
    cfg = SegmentationDataConfig.resolve(args)
    meta = generate(cfg.out, cfg.fashion_mnist, cfg.train, cfg.val, cfg.size, cfg.seed)
    base = meta["all_background_val"]
    print(f"{cfg.out}: {meta['settings']['train']} training and {meta['settings']['val']} validation scenes, "
          f"{len(meta['classes'])} classes; predicting background everywhere scores mIoU {base['mIoU']:.2f}, "
          f"mAcc {base['mAcc']:.2f}, aAcc {base['aAcc']:.2f} on validation")
    return 0
