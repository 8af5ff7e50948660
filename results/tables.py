"""The paper's tables as pandas DataFrames, from its published numbers and from our result records.

The published numbers live in ``reference/paper_tables.csv``, one line per printed cell. A :class:`TableSpec`
says how one table of the paper is laid out: its index columns, its value columns and which cells fill
them. :func:`build_table` pivots the cells into that layout in the paper's row order, then appends our rows,
made from the records with the same protocol and metric. An our-row cell shows the mean over seeds, their
standard deviation where there are several, and its difference to the published cell of the same setting
(method, architecture, pre-training epochs and data, variant, protocol, metric) where the table has one.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from emae.errors import EmaeError
from emae.methods import METHODS
from emae.records import Record

REFERENCE_CSV = Path(__file__).parent / "reference" / "paper_tables.csv"
REFERENCE_FIELDS = ("table", "row", "section", "label", "citation", "method", "arch", "pretrain_epochs",
                    "pretrain_data", "variant", "protocol", "metric", "dataset", "value", "note")

# the paper's names for our architectures and methods, and how a row label names its protocol where it must
ARCH_NAMES = {"vit_small_patch16": "ViT-S", "vit_base_patch16": "ViT-B", "vit_large_patch16": "ViT-L",
              "vit_huge_patch14": "ViT-H"}
METHOD_NAMES = {"untrained": "untrained backbone", "pixels": "raw pixels", "mae": "MAE", "emae": "EMAE",
                "parallel": "parallel mask", "random-k": "pure random mask", "complementary": "complementary mask",
                "consistency": "pure self-consistency"}
BASELINES = ("untrained", "pixels")  # what every accuracy is read against, first in the tables that show accuracy
PROTOCOL_SUFFIXES = {"linprobe": ", linear probing", "finetune": ", fine-tuning", "knn": ", k-NN",
                     "vitdet-cascade-mask-rcnn": " + cascade"}
DATA_ALIASES = {"imagenet": "imagenet-1k", "imagenet1k": "imagenet-1k", "in1k": "imagenet-1k",
                "ilsvrc2012": "imagenet-1k"}  # other names records may give ImageNet-1K
DEFAULT_PARTS, DEFAULT_MASK_RATIO = 4, 0.75
RECONSTRUCTION_PROTOCOLS = ("reconstruction", "reconstruction-classification")
# how a reconstruction row names the statistics that un-normalised its norm-pix predictions (extra["unnorm"])
UNNORM_NAMES = {"visible": "visible patches' statistics",
                "target": "masked patches' own statistics (leaks)"}
PAPER, OURS = "paper", "ours"
SETTING_FIELDS = ("method", "arch", "pretrain_data", "variant")


@dataclass(frozen=True)
class Column:
    """A value column: the cells of one metric measured with one protocol, or with any of several."""

    header: str
    protocol: str | tuple[str, ...]
    metric: str
    fmt: str = ".1f"
    ours_only: bool = False  # not in the paper: shown only when our records fill it

    @property
    def protocols(self) -> tuple[str, ...]:
        return (self.protocol,) if isinstance(self.protocol, str) else self.protocol

    def holds(self, protocol: str, metric: str) -> bool:
        return protocol in self.protocols and self.metric == metric


@dataclass(frozen=True)
class TableSpec:
    """The layout of one table of the paper, and which of our records join it.

    ``index`` pairs a header with the cell field it shows: ``label`` (the method, with its citation),
    ``arch``, ``pretrain_epochs``, ``pretrain_data`` or ``dataset``. With ``by_epochs`` the value columns are
    the pre-training epochs of the single column's protocol and metric (Tables XII and XIV).
    """

    name: str  # the paper's numeral
    title: str
    index: tuple[tuple[str, str], ...]
    columns: tuple[Column, ...]
    by_epochs: bool = False
    group: bool = False  # a first column "Group" holds the paper's section labels
    methods: tuple[str, ...] | None = None  # our records' methods shown, in row order; None: all, (): none
    labels: dict[str, str] = field(default_factory=dict)  # our row label per method, over METHOD_NAMES
    pretrain_data: str | None = None  # only our records pre-trained on this data
    pretrain_epochs: int | None = None  # only our records pre-trained this long

    def shows(self, fld: str) -> bool:
        return any(f == fld for _, f in self.index)


_METHOD, _ARCH, _EPOCHS = ("Method", "label"), ("Architecture", "arch"), ("Pre-train epochs", "pretrain_epochs")
_DATA = ("Pre-train data", "pretrain_data")
_LP = Column("Top-1", "linprobe", "top1")
_KNN = Column("k-NN Top-1 (ours)", "knn", "top1", ours_only=True)
_DET = (Column("APb", "vitdet-mask-rcnn", "APb"), Column("APm", "vitdet-mask-rcnn", "APm"))
_VITDET = ("vitdet-mask-rcnn", "vitdet-cascade-mask-rcnn")
_ABLATION = dict(index=(_METHOD, _DATA, _EPOCHS), columns=(_LP, _KNN))

SPECS: tuple[TableSpec, ...] = (
    TableSpec("I", "Pre-training time of MAE (2400 epochs), supervised training and EMAE (300 epochs), ViT-L",
              index=(("Encoder", "label"), _ARCH),
              columns=(Column("Total iterations", "pretrain", "iterations_rel", "g"),
                       Column("Total FLOPs per iteration", "pretrain", "flops_per_iter_rel", "g"),
                       Column("Total times (hours)", "pretrain", "hours", "g"),
                       Column("Total speedup", "pretrain", "speedup", "g")),
              methods=()),
    TableSpec("II", "ImageNet-1K linear probing and fine-tuning top-1 accuracy (%)",
              index=(_METHOD, _ARCH, _EPOCHS), group=True,
              columns=(Column("Linear Probing Top-1 Acc", "linprobe", "top1"),
                       Column("Fine-tuning Top-1 Acc", "finetune", "top1"),
                       dataclasses.replace(_KNN, header="k-NN Top-1 Acc (ours)"))),
    TableSpec("III", "COCO detection and instance segmentation, Mask R-CNN with ViT-B + FPN (benchmarking setting)",
              index=(_METHOD, _EPOCHS, _DATA),
              columns=tuple(Column(m, "vit-fpn-mask-rcnn", m) for m in
                            ("APb", "APb50", "APb75", "APm", "APm50", "APm75"))),
    TableSpec("IV", "COCO detection and instance segmentation with ViTDet, ViT-B (+ cascade: Cascade Mask R-CNN)",
              index=(_METHOD, _DATA, _EPOCHS),
              columns=(Column("APb", _VITDET, "APb"), Column("APm", _VITDET, "APm"))),
    TableSpec("VI", "ADE20K semantic segmentation, UperNet with ViT-B",
              index=(_METHOD, _DATA, _EPOCHS), columns=(Column("ADE20K mIoU", "upernet", "mIoU"),)),
    TableSpec("VIII", "Pre-training on COCO: ViTDet on COCO (APb, APm) and UperNet on ADE20K (mIoU), ViT-B",
              index=(_METHOD, _EPOCHS), columns=_DET + (Column("mIoU", "upernet", "mIoU"),), pretrain_data="coco"),
    TableSpec("IX", "Pre-training on OpenImages: COCO detection (APb, APm) and ADE20K segmentation (mIoU), ViT-B",
              index=(_METHOD, _EPOCHS), columns=_DET + (Column("mIoU", "upernet", "mIoU"),),
              pretrain_data="openimages"),
    TableSpec("X", "Ablation of whole-data utilization (mask strategies), ViT-B, linear probing top-1 (%)",
              **_ABLATION, methods=(*BASELINES, "mae", "random-k", "parallel", "complementary"),
              labels={"mae": "baseline"}),
    TableSpec("XI", "Ablation of self-consistency learning, ViT-B, linear probing top-1 (%)",
              **_ABLATION, methods=(*BASELINES, "parallel", "consistency", "emae"),
              labels={"parallel": "pixel reconstruction", "emae": "pixel reconstruction + self-consistency"}),
    TableSpec("XII", "Linear probing top-1 (%) against pre-training epochs, ViT-B",
              index=(_METHOD,), columns=(_LP,), by_epochs=True, methods=(*BASELINES, "mae", "parallel", "emae"),
              labels={"mae": "baseline", "parallel": "+ parallel mask strategy", "emae": "++ self-consistency"}),
    TableSpec("XIII", "EMAE pre-trained for 1600 epochs, ViT-B",
              index=(("Metrics", "label"), _DATA, _EPOCHS),
              columns=(Column("Top-1", ("linprobe", "finetune"), "top1"),),
              methods=("emae",), pretrain_epochs=1600),
    TableSpec("XIV", "Number of parts K of EMAE against MAE at the same mask ratio 1 - 1/K, linear probing top-1 (%)",
              index=(_METHOD,), columns=(_LP,), by_epochs=True, methods=(*BASELINES, "mae", "emae")),
    TableSpec("XV", "DINOv2 ViT-g linear classification of images reconstructed from 75 %-masked inputs",
              index=(("Metrics", "label"), ("Validation data", "dataset")),
              columns=(Column("Top-1", "reconstruction-classification", "top1"),), methods=("mae", "emae")),
    TableSpec("XVI", "Quality of reconstructions",
              index=(_METHOD,), methods=("mae", "emae"),
              columns=(Column("SSIM", "reconstruction", "ssim", ".3f"),
                       Column("LPIPS", "reconstruction", "lpips", ".3f"),
                       Column("FID", "reconstruction", "fid", ".1f"))),
)
SPEC_BY_NAME = {spec.name: spec for spec in SPECS}


def load_reference(path: str | Path = REFERENCE_CSV) -> pd.DataFrame:
    """The published cells, typed: ``row`` int, ``pretrain_epochs`` nullable int, ``value`` float."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except OSError as e:
        raise EmaeError(f"{path}: cannot read the reference table ({e.strerror})") from None
    missing = [f for f in REFERENCE_FIELDS if f not in frame.columns]
    if missing:
        raise EmaeError(f"{path}: reference table is missing the column(s) {missing}")
    for name, convert in (("row", int), ("value", float), ("pretrain_epochs", lambda s: int(s) if s else None)):
        for i, text in enumerate(frame[name]):
            try:
                convert(text)
            except ValueError:
                raise EmaeError(f"{path}:{i + 2}: field '{name}' must be a number, got {text!r}") from None
    frame["row"] = frame["row"].astype(int)
    frame["value"] = frame["value"].astype(float)
    frame["pretrain_epochs"] = pd.to_numeric(frame["pretrain_epochs"]).astype("Int64")
    return frame


def variant_of(record: Record) -> str:
    """The settings that tell apart rows of the same method, where not the default: K or the mask ratio, the
    loss weights (``w_pix``, ``w_sc``), pixel targets without per-patch normalisation, a pre-training time budget,
    the cls token as the read-out of kNN and the linear probe (the default being the average of the patch
    tokens), and, always, the statistics that un-normalised a norm-pix model's reconstructions (Tables XV, XVI).

    Raises:
        EmaeError: a reconstruction record of a norm-pix model that does not say its statistics."""
    settings = {**record.config, **record.extra}
    names = []
    parts = settings.get("parts")
    if record.method in ("emae", "parallel", "consistency", "random-k") and parts not in (None, DEFAULT_PARTS):
        names.append(f"K={parts}")
    ratio = settings.get("mask_ratio")
    if record.method == "mae" and ratio is not None and not math.isclose(ratio, DEFAULT_MASK_RATIO):
        names.append(f"mask ratio {100 * ratio:.1f}%")
    if record.method in METHODS:
        spec = METHODS[record.method]
        for key, short, default in (("pixel_weight", "w_pix", spec.pixel_weight),
                                    ("consistency_weight", "w_sc", spec.consistency_weight)):
            if settings.get(key) is not None and not math.isclose(settings[key], default):
                names.append(f"{short}={settings[key]:g}")
        if settings.get("norm_pix_loss") is False:
            names.append("pixel targets")
    if settings.get("time_budget_s"):
        names.append(f"in {settings['time_budget_s']:.0f} s")  # trained for a wall time (MAE's), not for its epochs
    if record.protocol in ("knn", "linprobe") and record.config.get("global_pool") == "token":
        names.append("cls token")  # the frozen features' read-out, where not the average of the patch tokens
    if record.protocol in RECONSTRUCTION_PROTOCOLS and record.extra.get("norm_pix", settings.get("norm_pix_loss")):
        unnorm = record.extra.get("unnorm")
        if unnorm not in UNNORM_NAMES:
            raise EmaeError(f"a {record.protocol} record of {record.method} ({record.metric}) names no known "
                            f"un-normalisation statistics: extra['unnorm'] is {unnorm!r}, not one of "
                            f"{sorted(UNNORM_NAMES)}")
        names.append(UNNORM_NAMES[unnorm])
    return ", ".join(names)


def records_frame(records: list[Record]) -> pd.DataFrame:
    """Our records as cells, architectures under the paper's names, unknown (negative) epochs as NA, ``budgeted``
    where the pre-training was stopped by a time budget (its own record or, for an evaluation, the config it
    inherited); a seed's latest record replaces earlier ones."""
    rows = [dict(method=r.method, arch=ARCH_NAMES.get(r.arch, r.arch),
                 pretrain_epochs=r.pretrain_epochs if r.pretrain_epochs >= 0 else None,
                 pretrain_data=r.pretrain_data, variant=variant_of(r), protocol=r.protocol, metric=r.metric,
                 dataset=r.dataset, value=float(r.value), seed=r.seed, date=r.date, hardware=r.hardware,
                 wall_time_s=float(r.wall_time_s), extra=r.extra,
                 budgeted=bool({**r.config, **r.extra}.get("time_budget_s"))) for r in records]
    frame = pd.DataFrame(rows, columns=["method", "arch", "pretrain_epochs", "pretrain_data", "variant", "protocol",
                                        "metric", "dataset", "value", "seed", "date", "hardware", "wall_time_s",
                                        "extra", "budgeted"])
    same = ["method", "arch", "pretrain_epochs", "pretrain_data", "variant", "protocol", "metric", "dataset", "seed"]
    frame = frame.sort_values("date", kind="stable").drop_duplicates(same, keep="last")
    return frame.reset_index(drop=True).astype({"pretrain_epochs": "Int64"})


@dataclass
class Table:
    """One built table: ``frame`` holds the index columns, the values (means over seeds) and each row's
    ``Source`` (paper or ours); ``std``, ``count`` and ``delta`` hold, per value cell, the standard deviation
    over seeds (sample, ``ddof=1``), the number of seeds and the difference to the matching published cell;
    ``setting`` is each row's method, architecture, pre-training data and variant, and ``notes`` are the
    reference data's notes on the paper's rows."""

    spec: TableSpec
    frame: pd.DataFrame
    std: pd.DataFrame
    count: pd.DataFrame
    delta: pd.DataFrame
    setting: pd.DataFrame
    notes: list[str]

    @property
    def value_columns(self) -> list[str]:
        return list(self.std.columns)

    def fmt(self, header: str) -> str:
        if self.spec.by_epochs:
            return self.spec.columns[0].fmt
        return next(c.fmt for c in self.spec.columns if c.header == header)

    def display(self) -> pd.DataFrame:
        """Every cell as text: ``-`` for an empty cell, ``mean ± std`` over several seeds, ``(Δ +d)`` to the paper."""
        out = self.frame.astype(object).where(self.frame.notna() & (self.frame != ""), "-")
        for header in self.value_columns:
            fmt = self.fmt(header)
            for i in self.frame.index:
                mean = self.frame.at[i, header]
                if pd.isna(mean):
                    continue
                text = f"{mean:{fmt}}"
                if self.count.at[i, header] > 1:
                    text += f" ± {self.std.at[i, header]:{fmt}}"
                if pd.notna(self.delta.at[i, header]):
                    text += f" (Δ {self.delta.at[i, header]:+{fmt}})"
                out.at[i, header] = text
        return out.astype(str)

    def to_csv_frame(self) -> pd.DataFrame:
        """The numbers; with our rows, a ``std``, ``n`` and ``delta`` column follows for each value column."""
        out = self.frame.copy()
        if not (self.frame["Source"] == OURS).any():
            return out
        for header in self.value_columns:
            out[f"{header} std"] = self.std[header]
            out[f"{header} n"] = self.count[header]
            out[f"{header} delta"] = self.delta[header]
        return out


def _paper_label(cell: pd.Series) -> str:
    return f"{cell['label']} [{cell['citation']}]" if cell["citation"] else cell["label"]


def _header(spec: TableSpec, cell: pd.Series) -> str | None:
    """The value column a cell belongs to, or None."""
    for column in spec.columns:
        if column.holds(cell["protocol"], cell["metric"]):
            if spec.by_epochs:
                return None if pd.isna(cell["pretrain_epochs"]) else str(cell["pretrain_epochs"])
            return column.header
    return None


def _row_fields(spec: TableSpec) -> list[str]:
    """The fields that make one of our rows: the setting, less what the columns already tell apart. The
    evaluation data is not one of them unless the table shows it: a table's cells share theirs."""
    fields = ["method", "arch", "pretrain_data", "variant"]
    if not spec.by_epochs:
        fields.append("pretrain_epochs")
    if any(len(c.protocols) > 1 for c in spec.columns):
        fields.append("protocol")
    if spec.shows("dataset"):
        fields.append("dataset")
    return fields


def _our_label(spec: TableSpec, key: dict) -> str:
    name = spec.labels.get(key["method"], METHOD_NAMES.get(key["method"], key["method"]))
    if "protocol" in key:
        name += PROTOCOL_SUFFIXES.get(key["protocol"], "")
    notes = ["ours"]
    notes += [key["pretrain_data"]] if not spec.shows("pretrain_data") else []
    notes += [key["arch"]] if not spec.shows("arch") else []
    notes += [key["variant"]] if key["variant"] else []
    return f"{name} ({', '.join(notes)})"


def _accepts(spec: TableSpec, ours: pd.DataFrame) -> pd.Series:
    keep = pd.Series([_header(spec, cell) is not None for _, cell in ours.iterrows()], index=ours.index, dtype=bool)
    if spec.methods is not None:
        keep &= ours["method"].isin(spec.methods)
    if spec.pretrain_data is not None:
        keep &= ours["pretrain_data"].str.lower() == spec.pretrain_data
    if spec.pretrain_epochs is not None:
        keep &= ours["pretrain_epochs"] == spec.pretrain_epochs
    return keep


def _norm(data: str) -> str:
    """Pre-training data in one spelling: lower case, no spaces, ImageNet-1K's aliases resolved."""
    data = data.lower().replace(" ", "")
    return DATA_ALIASES.get(data, data)


def _published(paper: pd.DataFrame, cell: dict) -> float:
    """The published value of the same setting, protocol and metric as one of our cells; NaN where none."""
    same = ((paper["method"] == cell["method"]) & (paper["arch"] == cell["arch"])
            & (paper["pretrain_epochs"] == cell["pretrain_epochs"]).fillna(False)
            & (paper["pretrain_data"].map(_norm) == _norm(cell["pretrain_data"]))
            & (paper["variant"] == cell["variant"]) & (paper["protocol"] == cell["protocol"])
            & (paper["metric"] == cell["metric"]))
    match = paper[same].sort_values("row")
    return float(match["value"].iloc[0]) if len(match) else math.nan


def _method_rank(spec: TableSpec, method: str) -> tuple[int, str]:
    order = list(spec.methods if spec.methods is not None else METHOD_NAMES)
    return (order.index(method), "") if method in order else (len(order), method)


def _paper_rows(spec: TableSpec, paper: pd.DataFrame) -> list[dict]:
    rows = []
    for row_no, cells in paper.groupby("row", sort=True):
        first = cells.iloc[0]
        row = {"Group": first["section"]} if spec.group else {}
        row.update({h: _paper_label(first) if f == "label" else first[f] for h, f in spec.index})
        for _, cell in cells.iterrows():
            header = _header(spec, cell)
            if header is None or header in row:
                raise EmaeError(f"Table {spec.name} row {row_no}: the reference cell {cell['protocol']}/"
                                f"{cell['metric']} has no place of its own in the table's columns")
            row[header] = cell["value"]
        rows.append(dict(row, Source=PAPER, **{f"setting.{f}": first[f] for f in SETTING_FIELDS}))
    return rows


def _notes(paper: pd.DataFrame) -> list[str]:
    """Each note once, prefixed with the rows it is about unless it is about every row."""
    notes = []
    for note, cells in paper[paper["note"] != ""].groupby("note", sort=False):
        rows = cells.drop_duplicates("row")
        if len(rows) == paper["row"].nunique():
            notes.append(f"{note[0].upper()}{note[1:]}.")
        else:
            where = ", ".join(f"row {r} ({_paper_label(c)})" for r, c in zip(rows["row"], rows.to_dict("records")))
            notes.append(f"{where[0].upper()}{where[1:]}: {note}.")
    return notes


def _our_rows(spec: TableSpec, paper: pd.DataFrame, ours: pd.DataFrame) -> list[tuple[dict, dict]]:
    """Our rows in order, each with its cells' (std, seeds, delta) by header."""
    ours = ours[_accepts(spec, ours)]
    ours = ours.assign(header=[_header(spec, cell) for _, cell in ours.iterrows()])
    fields = _row_fields(spec)
    built = []
    for values, cells in ours.groupby(fields, sort=False, dropna=False):
        key = dict(zip(fields, values))
        row = {"Group": "Ours"} if spec.group else {}
        row.update({h: _our_label(spec, key) if f == "label" else cells.iloc[0][f] for h, f in spec.index})
        stat = {}
        for (protocol, metric, header), same in cells.groupby(["protocol", "metric", "header"]):
            cell = dict(key, protocol=protocol, metric=metric, pretrain_epochs=same["pretrain_epochs"].iloc[0])
            row[header] = same["value"].mean()
            stat[header] = (same["value"].std(), len(same), row[header] - _published(paper, cell))
        epochs = key.get("pretrain_epochs", -1)
        order = (_norm(key["pretrain_data"]), key["arch"], _method_rank(spec, key["method"]), key["variant"],
                 key.get("protocol", ""), -1 if pd.isna(epochs) else epochs)
        built.append((order, dict(row, Source=OURS, **{f"setting.{f}": key[f] for f in SETTING_FIELDS}), stat))
    return [(row, stat) for _, row, stat in sorted(built, key=lambda b: b[0])]


def build_table(spec: TableSpec, reference: pd.DataFrame, ours: pd.DataFrame | None = None) -> Table:
    """The table in the paper's layout and row order, then our rows (from :func:`records_frame`), if any."""
    paper = reference[reference["table"] == spec.name]
    if paper.empty:
        raise EmaeError(f"the reference data has no cell of Table {spec.name}")
    rows = _paper_rows(spec, paper)
    stats: list[dict] = [{} for _ in rows]
    if ours is not None and not ours.empty:
        for row, stat in _our_rows(spec, paper, ours):
            rows.append(row)
            stats.append(stat)

    frame = pd.DataFrame(rows)
    setting = pd.DataFrame({f: frame.pop(f"setting.{f}") for f in SETTING_FIELDS})
    headers = _value_headers(spec, frame)
    index_headers = (["Group"] if spec.group else []) + [h for h, _ in spec.index]
    frame = frame.reindex(columns=index_headers + headers + ["Source"])
    frame[headers] = frame[headers].astype(float)

    def per_cell(k: int) -> pd.DataFrame:  # k = 0: std, 1: seeds, 2: delta of our cells
        return pd.DataFrame({h: [s[h][k] if h in s else math.nan for s in stats] for h in headers},
                            index=frame.index, dtype=float)

    std, delta = per_cell(0), per_cell(2)
    count = per_cell(1).fillna(frame[headers].notna().astype(float))  # a published cell is one measurement
    return Table(spec, frame, std, count.astype(int), delta, setting, _notes(paper))


def _value_headers(spec: TableSpec, frame: pd.DataFrame) -> list[str]:
    """The value columns in order: the paper's, then those only our rows fill."""
    if spec.by_epochs:
        epochs = [c for c in frame.columns if c.isdigit()]
        return sorted(epochs, key=int)
    return [c.header for c in spec.columns if not c.ours_only or c.header in frame.columns]


def build_tables(reference: pd.DataFrame, ours: pd.DataFrame | None = None) -> list[Table]:
    return [build_table(spec, reference, ours) for spec in SPECS]
