"""``emae data detection``: a small COCO-format detection dataset built from real Fashion-MNIST images.

Each scene is a black square canvas with a few Fashion-MNIST items, each scaled by a random factor and
placed so that item boxes do not overlap. An item's instance mask is its pixels brighter than
``MASK_THRESHOLD``, its box the mask's tight box and its category its Fashion-MNIST class (ids 1-10).
The ``train`` split draws items from Fashion-MNIST's training images, ``val`` from its test images, so
validation scenes hold unseen items.

Layout (what :mod:`detection.datasets` reads)::

    OUT/train/000000.png ...       grey PNG scenes
    OUT/val/000000.png ...
    OUT/annotations/instances_train.json   COCO instances, masks as RLE
    OUT/annotations/instances_val.json
    OUT/meta.json                          the dataset's name (``fmnist-scenes``), settings and splits
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from emae import settings
from emae.data import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, FashionMNIST, generated_dataset
from emae.errors import EmaeError
from emae.records import META_FILE, SCENES

MASK_THRESHOLD = 24  # grey level (0-255) above which an item pixel belongs to its mask
PLACEMENT_TRIES = 50


@dataclass(frozen=True)
class SceneSpec:
    size: int = 96  # scene side in pixels
    min_items: int = 2
    max_items: int = 4
    min_scale: float = 1.0  # item side = 28 px x a factor drawn uniformly in [min_scale, max_scale]
    max_scale: float = 1.6

    def validate(self) -> "SceneSpec":
        if not 1 <= self.min_items <= self.max_items:
            raise EmaeError(f"need 1 <= min_items <= max_items, got {self.min_items}, {self.max_items}")
        if not 0 < self.min_scale <= self.max_scale:
            raise EmaeError(f"need 0 < min_scale <= max_scale, got {self.min_scale}, {self.max_scale}")
        if round(28 * self.max_scale) > self.size:
            raise EmaeError(f"items up to {round(28 * self.max_scale)} px do not fit a {self.size}-px scene")
        return self


def compose_scene(items: FashionMNIST, rng: np.random.Generator, spec: SceneSpec):
    """One scene: (H, W) uint8 image and a list of (category id, (H, W) bool mask) per placed item."""
    canvas = np.zeros((spec.size, spec.size), dtype=np.uint8)
    taken: list[tuple[int, int, int, int]] = []  # placed boxes, x0 y0 x1 y1 (exclusive)
    instances = []
    for _ in range(rng.integers(spec.min_items, spec.max_items + 1)):
        index = int(rng.integers(len(items)))
        side = int(round(28 * rng.uniform(spec.min_scale, spec.max_scale)))
        item = np.asarray(Image.fromarray(items.images[index]).resize((side, side), Image.BILINEAR))
        ys, xs = np.nonzero(item > MASK_THRESHOLD)
        if len(ys) == 0:
            continue
        item = item[ys.min():ys.max() + 1, xs.min():xs.max() + 1]  # crop to the item's tight box
        h, w = item.shape
        for _ in range(PLACEMENT_TRIES):
            y, x = int(rng.integers(spec.size - h + 1)), int(rng.integers(spec.size - w + 1))
            if all(x + w <= a or b <= x or y + h <= c or d <= y for a, c, b, d in taken):
                break
        else:
            continue  # no free place for this item
        taken.append((x, y, x + w, y + h))
        keep = item > MASK_THRESHOLD
        canvas[y:y + h, x:x + w][keep] = item[keep]
        mask = np.zeros(canvas.shape, dtype=bool)
        mask[y:y + h, x:x + w] = keep
        instances.append((int(items.targets[index]) + 1, mask))
    return canvas, instances


def coco_annotation(ann_id: int, image_id: int, category: int, mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    rle["counts"] = rle["counts"].decode("ascii")
    return {"id": ann_id, "image_id": image_id, "category_id": category, "bbox": [x, y, w, h],
            "area": float(mask.sum()), "segmentation": rle, "iscrowd": 0}


def write_split(out: Path, split: str, items: FashionMNIST, count: int, spec: SceneSpec, seed: int) -> dict:
    """Write ``count`` scenes of one split (PNG files and the COCO JSON); returns the JSON's summary."""
    rng = np.random.default_rng(seed)
    (out / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id in range(1, count + 1):
        canvas, instances = compose_scene(items, rng, spec)
        file_name = f"{image_id - 1:06d}.png"
        Image.fromarray(canvas, mode="L").save(out / split / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": spec.size, "height": spec.size})
        for category, mask in instances:
            annotations.append(coco_annotation(len(annotations) + 1, image_id, category, mask))
    coco = {
        "info": {"description": f"Fashion-MNIST scenes ({split})", "scene_spec": asdict(spec), "seed": seed},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name, "supercategory": "fashion"}
                       for i, name in enumerate(FASHION_MNIST_CLASSES)],
    }
    path = out / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(coco), encoding="utf-8")
    os.replace(tmp, path)  # the JSON appears last and whole: its presence means the split is complete
    return {"split": split, "images": len(images), "annotations": len(annotations), "json": str(path)}


def make_dataset(out: str | os.PathLike, fashion_mnist: str | os.PathLike = FASHION_MNIST_DIR, train: int = 1000,
                 val: int = 100, spec: SceneSpec = SceneSpec(), seed: int = 0) -> list[dict]:
    """Write the ``train`` and ``val`` splits under ``out``; returns one summary per split.

    The dataset is built beside ``out`` and renamed into place, so ``out`` holds a whole dataset or none.
    An existing ``out`` made with the same settings is kept as it is; any other existing ``out`` (but an
    empty folder) is an error and is left untouched.
    """
    spec.validate()
    out = Path(out)
    settings = {"train": train, "val": val, "seed": seed, "scene_spec": asdict(spec)}
    if train < 1 or val < 1:
        raise EmaeError(f"need at least one scene per split, got train={train}, val={val}")

    def write(folder: Path) -> dict:
        summaries = [write_split(folder, "train", FashionMNIST(fashion_mnist, train=True), train, spec, seed),
                     write_split(folder, "val", FashionMNIST(fashion_mnist, train=False), val, spec, seed + 1)]
        return {"name": SCENES, "splits": [dict(s, json=str(Path(s["json"]).relative_to(folder))) for s in summaries]}

    meta = generated_dataset(out, settings, "detection", write)
    if "splits" not in meta:
        raise EmaeError(f"{out / META_FILE}: names no splits; remove the folder and make the dataset again")
    return _summaries(out, meta)


def _summaries(out: Path, meta: dict) -> list[dict]:
    return [dict(s, json=str(out / s["json"])) for s in meta["splits"]]


@dataclass(frozen=True)
class SceneDataConfig(settings.CommandConfig):
    """``emae data detection``'s config: defaults < ``--config FILE`` < flags (the folder's ``meta.json`` keeps
    the settings the scenes were made with)."""

    help_for: ClassVar[dict[str, str]] = {
        "out": "output folder (required)", "fashion_mnist": "folder of the Fashion-MNIST idx files",
        "train": "training scenes", "val": "validation scenes", "size": "scene side in pixels",
        "items": "items per scene: MIN MAX", "scale": "item scale range: MIN MAX (1 = 28 px)"}

    out: str = ""
    fashion_mnist: str = FASHION_MNIST_DIR
    train: int = 1000
    val: int = 100
    size: int = SceneSpec.size
    items: tuple[int, ...] = (SceneSpec.min_items, SceneSpec.max_items)
    scale: tuple[float, ...] = (SceneSpec.min_scale, SceneSpec.max_scale)
    seed: int = 0

    def validate(self) -> "SceneDataConfig":
        settings.require(self, ("out",))
        for name in ("items", "scale"):
            if len(getattr(self, name)) != 2:
                raise EmaeError(f"{name} takes two values, MIN MAX; got {list(getattr(self, name))}")
        self.spec()
        return self

    def spec(self) -> SceneSpec:
        return SceneSpec(self.size, *self.items, *self.scale).validate()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    SceneDataConfig.add_arguments(parser)


def main(args: argparse.Namespace) -> int:
    cfg = SceneDataConfig.resolve(args)
    for summary in make_dataset(cfg.out, cfg.fashion_mnist, cfg.train, cfg.val, cfg.spec(), cfg.seed):
        print(json.dumps(summary))
    return 0
