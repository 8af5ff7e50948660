"""The result record: one JSON object per measured number, shared by every command that measures.

A record says what was measured (``protocol``, ``metric``, ``value``), on what (``method``, ``arch``,
``pretrain_epochs``, ``pretrain_data``, ``dataset``, ``seed``) and how (provenance: ``command``,
``config``, ``checkpoint_sha256``, ``git_commit``, ``hardware``, ``wall_time_s``, ``date``). Records are
stored as JSON lines; :func:`read_records` validates every line and names the file, line and field of
the first problem.

Dataset names. Every command names the data a number was measured on as ``NAME SPLIT`` (``fashion-mnist
test``, ``fmnist-scenes val``, ``ADE20K val``, ``COCO val2017``). ``NAME`` comes from the data folder's own
``meta.json`` (``{"name": ...}``, written by ``emae data detection`` and ``emae data segmentation``), else
from the evaluation's config, else from the folder's name. Records written before this rule named detection
data ``FOLDER/SPLIT``; :func:`canonical_dataset` maps those names when records are read, so that old and new
records of the same data meet in one row of the report.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from emae.errors import EmaeError

RECORDS_FILE = "records.jsonl"
SCENES = "fmnist-scenes"  # the Fashion-MNIST scenes of `emae data detection` and `emae data segmentation`
META_FILE = "meta.json"

# old names of data whose folder name did not say what it was
LEGACY_NAMES = {
    "detection/val": f"{SCENES} val",  # the pipeline's scenes (ROOT/data/detection)
    "fmnist-det/val": f"{SCENES} val",  # the README's quick start
    "fmnist-scenes/val": f"{SCENES} val",  # detection/README.md
    "coco/val2017": "COCO val2017",
}

# the baselines' names in the method field: the untrained backbone (0 pre-training epochs) and raw pixels
UNTRAINED, PIXELS = "untrained", "pixels"
# the pre-training settings that tell apart variants of one method (copied into evaluation records' extra)
VARIANT_FIELDS = ("parts", "mask_ratio", "pixel_weight", "consistency_weight", "norm_pix_loss", "time_budget_s")


@dataclass(frozen=True)
class Record:
    method: str  # pre-training method: mae, emae, parallel, random-k, complementary, consistency, or another's name
    arch: str  # encoder architecture, e.g. vit_base_patch16
    pretrain_epochs: int
    pretrain_data: str  # e.g. imagenet-1k, fashion-mnist
    protocol: str  # pretrain, linprobe, finetune, knn, vitdet-mask-rcnn, upernet, consistency, ...
    metric: str  # top1, top5, APb, APm, mIoU, loss, ...
    value: float
    dataset: str  # the data the metric was measured on
    seed: int
    checkpoint_sha256: str
    command: str
    config: dict
    git_commit: str
    hardware: str
    wall_time_s: float
    date: str  # ISO 8601
    extra: dict = field(default_factory=dict)  # protocol-specific details (images seen, FLOPs, ...)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "method": (str,), "arch": (str,), "pretrain_epochs": (int,), "pretrain_data": (str,),
    "protocol": (str,), "metric": (str,), "value": (int, float), "dataset": (str,), "seed": (int,),
    "checkpoint_sha256": (str,), "command": (str,), "config": (dict,), "git_commit": (str,),
    "hardware": (str,), "wall_time_s": (int, float), "date": (str,), "extra": (dict,),
}
_OPTIONAL = {"extra"}


def record_from_dict(obj: Any, where: str) -> Record:
    """Validate one decoded JSON object; ``where`` (``file:line``) prefixes every error."""
    if not isinstance(obj, dict):
        raise EmaeError(f"{where}: a record must be a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(_FIELD_TYPES))
    if unknown:
        raise EmaeError(f"{where}: unknown record field(s) {unknown}")
    for name, types in _FIELD_TYPES.items():
        if name not in obj:
            if name in _OPTIONAL:
                continue
            raise EmaeError(f"{where}: record is missing the field '{name}'")
        value = obj[name]
        # bool is an int subclass; a true/false in a numeric field is a mistake
        if isinstance(value, bool) or not isinstance(value, types):
            want = " or ".join(t.__name__ for t in types)
            raise EmaeError(f"{where}: field '{name}' must be {want}, got {type(value).__name__} {value!r}")
    return Record(**obj)


def read_records(path: str | os.PathLike) -> list[Record]:
    """Read every record of a JSON-lines file, or of every ``*.jsonl`` file under a folder."""
    path = Path(path)
    if not path.exists():
        raise EmaeError(f"{path}: no such records file or folder")
    files = sorted(path.rglob("*.jsonl")) if path.is_dir() else [path]
    records = []
    for file in files:
        with open(file, encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{file}:{lineno}"
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise EmaeError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
                if isinstance(obj, dict) and isinstance(obj.get("dataset"), str):  # old names: today's
                    obj["dataset"] = canonical_dataset(obj["dataset"])
                records.append(record_from_dict(obj, where))
    return records


def append_records(path: str | os.PathLike, records: Iterable[Record]) -> None:
    """Append records to a JSON-lines file as one write, flushed to disk (a crash leaves whole lines)."""
    path = Path(path)
    if path.exists():
        read_records(path)  # never append to a damaged file: the error names its bad line
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(r.to_json() + "\n" for r in records)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def print_records(records: Iterable[Record], note: str = "") -> None:
    """One line per record: ``protocol metric = value % on dataset (arch, wall time)``."""
    for r in records:
        print(f"{r.protocol} {r.metric} = {r.value:.2f} % on {r.dataset} ({r.arch}, {r.wall_time_s:.0f} s){note}")


def write_records(path: str | os.PathLike, records: list[Record], echo: bool = True) -> list[Record]:
    """The one record writer: append ``records`` to ``path`` at once (:func:`append_records`) and print them."""
    append_records(path, records)
    if echo:
        print_records(records)
    return records


# the config fields that change how a run goes, not what it computes: the one rule for what a re-run (or a
# resumed run) may change. Everything else must equal the earlier run's, or the re-run is refused.
RUN_FIELDS = frozenset({"num_workers", "device", "threads", "dist_timeout", "output_dir", "features_dir", "num_gpus",
                        "compile", "log_every", "save_every", "keep_every", "skip_bad_images"})


def comparable(config: dict) -> dict:
    """A config without the fields that do not change results (:data:`RUN_FIELDS`)."""
    return {k: v for k, v in config.items() if k not in RUN_FIELDS}


def changed_fields(saved: dict, current: dict) -> list[str]:
    """The fields (outside :data:`RUN_FIELDS`) in which two configs of a run differ."""
    a, b = comparable(saved), comparable(current)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def check_rerun(path: str | os.PathLike, current: dict,
                hint: str = "resume it with the same settings or choose another --output-dir") -> None:
    """A folder whose run saved its config at ``path`` may run again only with the same config outside
    :data:`RUN_FIELDS`; the error names the file and the fields that differ. Nothing to check without the file."""
    from emae.settings import read_json

    path = Path(path)
    if not path.is_file():
        return
    saved = read_json(path)
    if not isinstance(saved, dict):
        raise EmaeError(f"{path}: not a saved config (a JSON object); remove the file or choose another --output-dir")
    changed = changed_fields(saved, current)
    if changed:
        raise EmaeError(f"{path}: this folder holds a run with other settings ({', '.join(changed)}: "
                        f"{[saved.get(k) for k in changed]}); {hint}")


def finished_records(path: str | os.PathLike, config: dict, checkpoint_sha256: str, protocol: str | None = None,
                     metrics: Iterable[str] = ()) -> list[Record]:
    """The one "already finished?" rule: the records in ``path`` (a records file) made from the checkpoint of
    this hash with this config (equal outside :data:`RUN_FIELDS`), of ``protocol`` when given; empty unless
    they cover every metric in ``metrics``. Records mean the run finished and need no re-run."""
    path = Path(path)
    if not path.is_file():
        return []
    mine = comparable(config)
    found = [r for r in read_records(path) if r.checkpoint_sha256 == checkpoint_sha256
             and (protocol is None or r.protocol == protocol) and comparable(r.config) == mine]
    return found if {r.metric for r in found} >= set(metrics) else []


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a checkpoint: of the file, or of a Hugging Face folder's weights file
    (:func:`emae.formats.weights_file`)."""
    from emae.formats import weights_file

    h = hashlib.sha256()
    with open(weights_file(path), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_commit() -> str:
    """The commit of the suite's own checkout, with ``+dirty`` for uncommitted changes; ``unknown`` outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def hardware() -> str:
    """A one-line description: GPU name(s) when CUDA is in use, else the CPU and its core count."""
    import torch

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return f"{len(names)}x {names[0]}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"CPU {cpu} ({os.cpu_count()} cores)"


def provenance(config: dict, checkpoint: str | os.PathLike | None, wall_time_s: float,
               checkpoint_sha256: str | None = None) -> dict:
    """The provenance fields of a record for a run of this process (``checkpoint_sha256``: the checkpoint's hash
    where the run already computed it)."""
    return dict(
        command=" ".join(["emae" if Path(sys.argv[0]).name in ("__main__.py", "emae") else Path(sys.argv[0]).name]
                         + sys.argv[1:]),
        config=config,
        checkpoint_sha256=checkpoint_sha256 or (sha256_file(checkpoint) if checkpoint else ""),
        git_commit=git_commit(),
        hardware=hardware(),
        wall_time_s=float(wall_time_s),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )


def variant_settings(config: dict | None) -> dict:
    """The pre-training settings of ``config`` that make a variant of its method (:data:`VARIANT_FIELDS`), for an
    evaluation record's ``extra``, so that the report tells the variants apart."""
    return {k: config[k] for k in VARIANT_FIELDS if k in (config or {})}


def backbone_fields(config: dict | None, arch: str, overrides: dict | None = None) -> dict:
    """The pre-training fields of a record (method, arch, pretrain_epochs, pretrain_data) for a backbone.

    ``config`` is the pre-training config stored in our checkpoints and exports (None for an official
    MAE or timm checkpoint: then the method is ``mae`` and the epochs ``-1`` (unknown) unless
    ``overrides`` say otherwise); a config of 0 epochs is the untrained backbone, method ``untrained``.
    ``arch`` names the encoder when the config does not.
    """
    fields = {"method": "mae", "arch": arch, "pretrain_epochs": -1, "pretrain_data": "unknown"}
    if config:
        fields.update(method=config["method"] if config["epochs"] else UNTRAINED, arch=config["arch"],
                      pretrain_epochs=config["epochs"],
                      pretrain_data=config.get("data_name") or Path(config["data"]).name)
    fields.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return fields


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
