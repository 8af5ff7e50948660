"""One name per dataset in the records: ``NAME SPLIT``.

Every command names the data a number was measured on as ``NAME SPLIT`` (``fashion-mnist test``,
``fmnist-scenes val``, ``ADE20K val``, ``COCO val2017``). ``NAME`` comes from the data folder's own
``meta.json`` (``{"name": ...}``, written by ``emae data detection`` and ``emae data segmentation``), else
from the evaluation's config, else from the folder's name.

Records written before this rule named detection data ``FOLDER/SPLIT`` (``detection/val`` for the
pipeline's Fashion-MNIST scenes); :func:`canonical_dataset` maps those names when records are read, so that
old and new records of the same data meet in one row of the report.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

SCENES = "fmnist-scenes"  # the Fashion-MNIST scenes of `emae data detection` and `emae data segmentation`
META_FILE = "meta.json"

# old names of data whose folder name did not say what it was
LEGACY_NAMES = {
    "detection/val": f"{SCENES} val",  # the pipeline's scenes (ROOT/data/detection)
    "fmnist-det/val": f"{SCENES} val",  # the README's quick start
    "fmnist-scenes/val": f"{SCENES} val",  # detection/README.md
    "coco/val2017": "COCO val2017",
}


def dataset_name(name: str, split: str) -> str:
    return f"{name} {split}"


def folder_dataset_name(root: str | os.PathLike) -> str | None:
    """The dataset name a data folder's ``meta.json`` gives, if it has one."""
    path = Path(root) / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) and name else None


def record_dataset(root: str | os.PathLike, split: str, config_name: str | None = None) -> str:
    """The ``dataset`` of a record measured on ``split`` of the data folder ``root``: the folder's own name
    for itself (``meta.json``), else ``config_name`` (a config's full ``NAME SPLIT``), else the folder's name."""
    name = folder_dataset_name(root)
    if name:
        return dataset_name(name, split)
    if config_name:
        return config_name
    return dataset_name(Path(root).resolve().name, split)


def canonical_dataset(name: str) -> str:
    """Today's name of a dataset named ``name`` by a record, old or new."""
    if name in LEGACY_NAMES:
        return LEGACY_NAMES[name]
    folder, sep, split = name.rpartition("/")
    if sep and folder and split and " " not in name:  # an old detection record: FOLDER/SPLIT
        return dataset_name(folder, split)
    return name
