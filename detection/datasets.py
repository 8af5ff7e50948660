"""COCO-format datasets registered with detectron2 by path.

A dataset root holds COCO's layout: ``<root>/<split>/`` (images) and
``<root>/annotations/instances_<split>.json`` (COCO instances: ``images``, ``annotations``,
``categories``), e.g. ``train2017`` / ``val2017`` for COCO itself and ``train`` / ``val`` for the scenes
of :mod:`detection.synthetic`. Loading stays detectron2's (``register_coco_instances``); this module
finds the files, names what is missing, and reads the categories the model needs.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from emae.errors import EmaeError


@dataclass(frozen=True)
class CocoSplit:
    name: str  # the name registered in detectron2's DatasetCatalog
    json_file: Path
    image_root: Path


def find_split(root: str | os.PathLike, split: str) -> CocoSplit:
    """The files of ``split`` under ``root``; an error names the first missing path."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise EmaeError(f"{root}: dataset folder not found")
    json_file = root / "annotations" / f"instances_{split}.json"
    image_root = root / split
    if not json_file.is_file():
        raise EmaeError(f"{json_file}: annotation file not found (a COCO-format root holds "
                        f"annotations/instances_<split>.json and <split>/)")
    if not image_root.is_dir():
        raise EmaeError(f"{image_root}: image folder of split '{split}' not found")
    return CocoSplit(f"emae:{root}:{split}", json_file, image_root)


def register(split: CocoSplit) -> str:
    """Register ``split`` with detectron2 (once per process) and return its dataset name."""
    if split.name not in DatasetCatalog.list():
        register_coco_instances(split.name, {}, str(split.json_file), str(split.image_root))
    return split.name


def read_categories(json_file: str | os.PathLike) -> list[str]:
    """The category names of a COCO instances file, in the order of their ids (detectron2's class order)."""
    try:
        with open(json_file, encoding="utf-8") as f:
            coco = json.load(f)
    except json.JSONDecodeError as e:
        raise EmaeError(f"{json_file}: not valid JSON ({e.msg} at line {e.lineno})") from None
    missing = [key for key in ("images", "annotations", "categories") if key not in coco]
    if missing:
        raise EmaeError(f"{json_file}: not a COCO instances file: no {missing}")
    if not coco["categories"]:
        raise EmaeError(f"{json_file}: has no categories")
    return [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])]


def check_same_categories(train_name: str, val_classes: list[str]) -> None:
    """After detectron2 has loaded the training split: its classes must be the validation split's."""
    train_classes = list(MetadataCatalog.get(train_name).thing_classes)
    if train_classes != val_classes:
        raise EmaeError(f"the training and validation annotations have different categories: "
                        f"{train_classes} vs {val_classes}")
