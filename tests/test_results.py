"""The report: the paper's tables from the reference data, our rows from records, and the written files.

The expected tables below are typed from the paper, in its wide layout, independently of the long
reference CSV they are checked against.
"""
from __future__ import annotations

import json
import math
import struct

import pandas as pd
import pytest

from emae import cli
from emae.errors import EmaeError
from emae.records import Record, append_records, read_records
from results import report
from results.cost import cost_frame, cost_table, speedup_summary
from results.tables import SPEC_BY_NAME, SPECS, build_table, build_tables, load_reference, records_frame

_ = None  # an empty cell ("-" in the paper)
IN = "ImageNet-1K"

# name: (headers, rows); Table II's "Group" column is checked separately
PAPER = {
    "I": (["Encoder", "Architecture", "Total iterations", "Total FLOPs per iteration", "Total times (hours)",
           "Total speedup"],
          [("MAE", "ViT-L", 1, 1, 180.76, 1), ("Supervised", "ViT-L", 0.125, 4, 23.83, 7.58),
           ("EMAE", "ViT-L", 0.125, 4, 23.75, 7.61)]),
    "II": (["Method", "Architecture", "Pre-train epochs", "Linear Probing Top-1 Acc", "Fine-tuning Top-1 Acc"],
           [("scratch [71]", "ViT-S", 300, _, 79.9), ("scratch [21]", "ViT-B", 300, _, 82.3),
            ("scratch [21]", "ViT-L", 300, _, 82.6), ("MoCo v3 [32]", "ViT-B", 300, 76.2, 83.2),
            ("DINO [46]", "ViT-B", 400, 78.2, 83.4), ("MSN [42]", "ViT-B", 600, _, 83.4),
            ("MST [17]", "ViT-S", 100, 75.0, _), ("AttMask [75]", "ViT-S", 100, 76.1, 81.3),
            ("iBOT [18]", "ViT-S", 100, 74.4, 81.1), ("iBOT [18]", "ViT-S", 3200, 77.9, 82.3),
            ("iBOT [18]", "ViT-B", 1600, 79.5, 84.0), ("iBOT [18]", "ViT-L", 1200, 81.0, 84.8),
            ("CAE [71]", "ViT-S", 300, 50.8, 81.8), ("CAE [71]", "ViT-B", 800, 68.3, 83.6),
            ("BEiT [19]", "ViT-B", 800, 56.7, 83.2), ("BEiT [19]", "ViT-L", 800, 73.5, 85.2),
            ("SimMIM [20]", "ViT-B", 800, 56.7, 83.8), ("data2vec [44]", "ViT-B", 800, _, 84.2),
            ("data2vec [44]", "ViT-L", 1600, 77.3, 86.6), ("I-JEPA [45]", "ViT-B", 600, 72.9, _),
            ("I-JEPA [45]", "ViT-L", 600, 77.5, _), ("MAE [21]", "ViT-B", 300, 61.5, 82.9),
            ("MAE [21]", "ViT-B", 800, 64.4, 83.4), ("MAE [21]", "ViT-B", 1600, 67.8, 83.6),
            ("MAE [21]", "ViT-B", 2400, 68.2, 83.8), ("MAE [21]", "ViT-L", 1600, 75.6, 85.9),
            ("MAE [21]", "ViT-H", 1600, 76.6, 86.9), ("EMAE", "ViT-B", 300, 68.2, 83.8),
            ("EMAE", "ViT-B", 800, 70.4, 84.0), ("EMAE", "ViT-L", 800, 76.7, 86.3)]),
    "III": (["Method", "Pre-train epochs", "Pre-train data", "APb", "APb50", "APb75", "APm", "APm50", "APm75"],
            [("Supervised [71]", 300, IN, 47.9, _, _, 42.9, _, _), ("MoCo v3 [32]", 600, IN, 47.9, _, _, 42.7, _, _),
             ("BEiT [19]", 800, "ImageNet-1K + DALLE", 49.8, _, _, 44.4, _, _),
             ("CAE [71]", 1600, IN, 50.0, 70.9, 54.8, 44.0, 67.9, 47.6),
             ("MAE [21]", 1600, IN, 50.4, 70.8, 55.7, 44.9, 68.3, 48.9),
             ("EMAE", 300, IN, 50.6, 70.9, 56.1, 45.0, 68.6, 49.3),
             ("EMAE", 800, IN, 51.4, 72.2, 56.5, 45.7, 69.4, 49.8)]),
    "IV": (["Method", "Pre-train data", "Pre-train epochs", "APb", "APm"],
           [("Rand Init [40]", _, _, 48.1, 42.6), ("Supervised [40]", IN, 300, 47.6, 42.4),
            ("Supervised [40]", "ImageNet-21K", 300, 47.8, 42.6), ("MAE [8]", IN, 1600, 51.2, 45.5),
            ("MAE, our impl.", IN, 1600, 51.6, 45.9), ("R-MAE [43]", IN, 1600, 52.3, 46.4),
            ("EMAE", IN, 300, 51.8, 46.1), ("EMAE", IN, 800, 52.5, 46.7), ("MAE + cascade", IN, 1600, 54.0, 46.7),
            ("EMAE + cascade", IN, 300, 54.3, 46.9), ("EMAE + cascade", IN, 800, 54.8, 47.6)]),
    "VI": (["Method", "Pre-train data", "Pre-train epochs", "ADE20K mIoU"],
           [("Supervised [21]", IN, 300, 47.4), ("SplitMask [87]", "ADE20K", 21000, 45.7),
            ("MoCo v3 [32]", IN, 600, 47.3), ("BEiT [21]", "ImageNet-1K+DALLE", 800, 47.1),
            ("PeCo [88]", IN, 300, 46.7), ("CIM [89]", IN, 100, 43.5), ("R-MAE [43]", IN, 1600, 47.6),
            ("MAE [21]", IN, 1600, 48.1), ("CAE [71]", IN, 800, 49.7), ("EMAE", IN, 300, 48.4),
            ("EMAE", IN, 800, 49.3), ("EMAE", IN, 800, 50.8)]),
    "VIII": (["Method", "Pre-train epochs", "APb", "APm", "mIoU"],
             [("MAE [21]", 2000, 49.9, 44.5, 45.2), ("MAE [21]", 4000, 50.1, 44.6, 45.9),
              ("MAE [21]", 8000, 50.1, 44.6, 46.5), ("R-MAE [43]", 2000, 49.7, 44.1, 46.0),
              ("R-MAE [43]", 4000, 50.6, 45.0, 46.8), ("R-MAE [43]", 8000, 50.8, 45.2, 47.0),
              ("EMAE", 1000, 50.0, 44.5, 46.6), ("EMAE", 2000, 50.7, 45.1, 47.2), ("EMAE", 4000, 51.0, 45.3, 47.7)]),
    "IX": (["Method", "Pre-train epochs", "APb", "APm", "mIoU"],
           [("MAE [21]", 800, 49.9, 44.6, 47.8), ("EMAE", 100, 50.0, 44.8, 48.0), ("EMAE", 800, 50.8, 45.3, 49.3)]),
    "X": (["Method", "Pre-train data", "Pre-train epochs", "Top-1"],
          [("(a) baseline", IN, 200, 58.8), ("(b) pure random mask", IN, 200, 62.5),
           ("(c) parallel mask", IN, 200, 63.4), ("(d) complementary mask", IN, 200, 46.7)]),
    "XI": (["Method", "Pre-train data", "Pre-train epochs", "Top-1"],
           [("(a) pixel reconstruction", IN, 200, 63.4), ("(b) pure self-consistency", IN, 200, 64.9),
            ("(c) pixel reconstruction + self-consistency", IN, 200, 65.0)]),
    "XII": (["Method", "100", "200", "300", "800"],
            [("baseline", 54.8, 58.8, 61.5, 64.4), ("+ parallel mask strategy", 60.0, 63.4, 65.3, 68.4),
             ("++ self-consistency", 60.9, 65.0, 68.4, 70.4)]),
    "XIII": (["Metrics", "Pre-train data", "Pre-train epochs", "Top-1"],
             [("(a) linear probing", IN, 1600, 71.2), ("(b) fine-tuning", IN, 1600, 84.2)]),
    "XIV": (["Method", "100", "300", "800"],
            [("(a) MAE mask ratio = 75%", 54.8, 61.5, 64.4), ("(b) EMAE K = 4", 60.9, 68.4, 70.4),
             ("(c) MAE mask ratio = 85.7%", 53.3, 61.0, 63.9), ("(d) EMAE K = 7", 60.5, 66.5, 68.1),
             ("(e) MAE mask ratio = 92.9%", 46.4, 54.7, 60.7), ("(f) EMAE K = 14", 52.5, 61.0, 66.7)]),
    "XV": (["Metrics", "Validation data", "Top-1"],
           [("(a) DINO v2", "ImageNet-1K val set", 86.6), ("(b) MAE", "ImageNet-1K val set", 80.4),
            ("(c) EMAE", "ImageNet-1K val set", 86.2)]),
    "XVI": (["Method", "SSIM", "LPIPS", "FID"], [("MAE", 0.668, 0.400, 48.8), ("EMAE", 0.734, 0.296, 29.7)]),
}


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return load_reference()


def _cells(frame: pd.DataFrame) -> list[tuple]:
    """Rows as tuples, empty cells as None and whole numbers as int, to compare with the paper's tables."""
    def plain(v):
        if isinstance(v, str):
            return v or None
        if pd.isna(v):
            return None
        return int(v) if float(v).is_integer() else float(v)
    return [tuple(plain(v) for v in row) for row in frame.itertuples(index=False)]


def test_every_paper_table_is_specified():
    assert sorted(SPEC_BY_NAME) == sorted(PAPER)


@pytest.mark.parametrize("name", list(PAPER))
def test_reference_table_equals_paper(reference, name):
    headers, rows = PAPER[name]
    table = build_table(SPEC_BY_NAME[name], reference)
    frame = table.frame.drop(columns=["Source"] + (["Group"] if table.spec.group else []))
    assert list(frame.columns) == headers
    got = _cells(frame)
    assert len(got) == len(rows)
    for i, (mine, paper) in enumerate(zip(got, rows)):
        assert mine[0] == paper[0], f"Table {name} row {i + 1}"
        for h, a, b in zip(headers[1:], mine[1:], paper[1:]):
            assert a == b or (isinstance(a, float) and math.isclose(a, b)), f"Table {name} row {i + 1} {h}: {a} != {b}"
    assert set(table.frame["Source"]) == {"paper"}


def test_table_ii_sections(reference):
    groups = build_table(SPEC_BY_NAME["II"], reference).frame["Group"]
    assert list(dict.fromkeys(groups)) == ["Supervised learning on ImageNet", "Contrastive learning",
                                           "Masked image modeling + contrastive learning", "Masked image modeling"]
    assert list(groups.value_counts(sort=False)) == [3, 3, 6, 18]


def test_every_reference_cell_lands_in_one_table_cell(reference):
    placed = sum(int(t.frame[t.value_columns].notna().sum().sum()) for t in build_tables(reference))
    assert placed == len(reference)


def test_display_keeps_the_papers_precision(reference):
    shown = {name: build_table(SPEC_BY_NAME[name], reference).display() for name in ("I", "XVI", "III")}
    assert list(shown["I"]["Total times (hours)"]) == ["180.76", "23.83", "23.75"]
    assert list(shown["I"]["Total iterations"]) == ["1", "0.125", "0.125"]
    assert list(shown["XVI"]["LPIPS"]) == ["0.400", "0.296"]
    assert list(shown["III"]["APb50"])[:4] == ["-", "-", "-", "70.9"]


def test_bad_reference_data_names_file_and_field(tmp_path, reference):
    bad = tmp_path / "paper.csv"
    reference.drop(columns=["metric"]).to_csv(bad, index=False)
    with pytest.raises(EmaeError, match=r"paper\.csv.*'metric'"):
        load_reference(bad)
    broken = reference.astype(str).replace({"pretrain_epochs": {"<NA>": ""}})
    broken.loc[5, "value"] = "76.2%"
    broken.to_csv(bad, index=False)
    with pytest.raises(EmaeError, match=r"paper\.csv:7: field 'value'"):
        load_reference(bad)


# --- our records -----------------------------------------------------------------------------------------------

def make_record(**fields) -> Record:
    base = dict(method="emae", arch="vit_base_patch16", pretrain_epochs=800, pretrain_data="imagenet-1k",
                protocol="linprobe", metric="top1", value=70.0, dataset="imagenet-1k", seed=0,
                checkpoint_sha256="0" * 64, command="emae eval linprobe", config={}, git_commit="abc123",
                hardware="1x NVIDIA H100", wall_time_s=60.0, date="2025-01-01T00:00:00+00:00", extra={})
    return Record(**{**base, **fields})


def fmnist(method, epochs, protocol="linprobe", value=0.0, **fields) -> Record:
    return make_record(method=method, arch="vit_tiny_fmnist", pretrain_epochs=epochs, pretrain_data="fashion-mnist",
                       dataset="fashion-mnist", protocol=protocol, value=value, **fields)


def pretrain(method, epochs, hours, **fields) -> Record:
    return fmnist(method, epochs, "pretrain", 0.1, metric="loss", wall_time_s=hours * 3600,
                  extra=dict(images_seen=60000 * epochs, flops_per_iter=2.5e9, epochs=epochs,
                             iterations=235 * epochs, batch_size=256, parts=4))


@pytest.fixture()
def records(tmp_path):
    recs = [make_record(seed=s, value=v) for s, v in ((0, 70.1), (1, 70.3), (2, 70.5))]  # Table II EMAE 800
    recs += [make_record(seed=0, value=99.0, date="2024-12-31T00:00:00+00:00")]  # replaced by the later seed 0
    recs += [make_record(method="emae", pretrain_epochs=100, value=60.0, config={"parts": 7})]  # Table XIV (d)
    recs += [fmnist("mae", 10, value=75.0), fmnist("mae", 20, value=80.0), fmnist("emae", 10, value=81.0),
             fmnist("emae", 20, value=83.0), fmnist("emae", 20, "knn", 84.0), fmnist("parallel", 10, value=79.0)]
    recs += [pretrain("mae", 10, 1.0), pretrain("mae", 20, 2.0), pretrain("emae", 10, 1.25), pretrain("emae", 20, 2.5)]
    path = tmp_path / "records" / "records.jsonl"
    append_records(path, recs)
    return path


def test_our_rows_with_seeds_and_delta(reference, records):
    ours = records_frame(read_records(records))
    table = build_table(SPEC_BY_NAME["II"], reference, ours)
    shown = table.display().set_index("Method")
    row = shown.loc["EMAE (ours, imagenet-1k)"]
    assert row["Source"] == "ours" and row["Group"] == "Ours"
    assert row["Linear Probing Top-1 Acc"] == "70.3 ± 0.2 (Δ -0.1)"
    assert row["Fine-tuning Top-1 Acc"] == "-"
    fm = shown.loc["EMAE (ours, fashion-mnist)"].set_index("Pre-train epochs")
    assert list(fm["Architecture"]) == ["vit_tiny_fmnist"] * 2
    assert list(fm["Linear Probing Top-1 Acc"]) == ["81.0", "83.0"]
    assert list(fm["k-NN Top-1 Acc (ours)"]) == ["-", "84.0"]
    paper_rows = len(PAPER["II"][1])
    assert list(table.frame["Source"][:paper_rows]) == ["paper"] * paper_rows  # ours come after the paper's
    assert table.count.loc[table.frame["Method"] == "EMAE (ours, imagenet-1k)", "Linear Probing Top-1 Acc"].item() == 3


def test_unknown_epochs_and_imagenet_aliases(reference):
    ours = records_frame([make_record(method="mae", pretrain_epochs=-1, value=67.0),  # an official checkpoint
                          make_record(method="mae", pretrain_epochs=1600, pretrain_data="imagenet", value=68.0)])
    shown = build_table(SPEC_BY_NAME["II"], reference, ours).display()
    mine = shown[shown["Source"] == "ours"]
    assert list(mine["Pre-train epochs"]) == ["-", "1600"]
    assert list(mine["Linear Probing Top-1 Acc"]) == ["67.0", "68.0 (Δ +0.2)"]
    xii = build_table(SPEC_BY_NAME["XII"], reference, ours)  # unknown epochs have no column there
    assert xii.value_columns == ["100", "200", "300", "800", "1600"] and (xii.frame["Source"] == "ours").sum() == 1


def test_our_rows_in_ablation_tables(reference, records):
    ours = records_frame(read_records(records))
    xii = build_table(SPEC_BY_NAME["XII"], reference, ours)
    assert xii.value_columns == ["10", "20", "100", "200", "300", "800"]
    mine = xii.frame[xii.frame["Source"] == "ours"].set_index("Method")
    fm = "(ours, fashion-mnist, vit_tiny_fmnist)"
    assert list(mine.index) == [f"baseline {fm}", f"+ parallel mask strategy {fm}", f"++ self-consistency {fm}",
                                "++ self-consistency (ours, imagenet-1k, ViT-B)",
                                "++ self-consistency (ours, imagenet-1k, ViT-B, K=7)"]
    assert mine.loc[f"baseline {fm}", ["10", "20"]].tolist() == [75.0, 80.0]
    assert xii.display().set_index("Method").loc["++ self-consistency (ours, imagenet-1k, ViT-B)", "800"] == \
        "70.3 ± 0.2 (Δ -0.1)"
    x = build_table(SPEC_BY_NAME["X"], reference, ours).frame.set_index("Method")
    assert x.loc["baseline (ours, vit_tiny_fmnist)", "Top-1"].tolist() == [75.0, 80.0]
    assert set(x.loc["baseline (ours, vit_tiny_fmnist)", "Pre-train data"]) == {"fashion-mnist"}
    xiv = build_table(SPEC_BY_NAME["XIV"], reference, ours).display().set_index("Method")
    assert xiv.loc["EMAE (ours, imagenet-1k, ViT-B, K=7)", "100"] == "60.0 (Δ -0.5)"  # against (d) EMAE K = 7


def test_cost_table_and_speedup(records):
    cost = cost_frame(records_frame(read_records(records))).set_index(["method", "pretrain_epochs"])
    assert cost.loc[("mae", 20), "speedup"] == 1.0
    assert cost.loc[("emae", 10), "speedup"] == pytest.approx(2.0 / 1.25)  # reaches 80.0 (MAE, 20 epochs) first
    assert math.isnan(cost.loc[("mae", 10), "speedup"])
    assert cost.loc[("emae", 10), "images_seen"] == 600000 and cost.loc[("emae", 10), "flops_per_iter"] == 2.5e9
    summary = speedup_summary(cost.reset_index())
    assert len(summary) == 1 and "1.60x" in summary[0]
    slower = cost.reset_index().assign(speedup=lambda c: c["speedup"].where(c["method"] != "emae"))
    (line,) = speedup_summary(slower)
    assert "no EMAE run reaches the linprobe top-1 of MAE (20 epochs, 80.0" in line


def test_a_budgeted_run_shows_the_epochs_it_ran_of_those_it_was_set(tmp_path):
    budgeted = pretrain("emae", 4, 0.04)
    budgeted.extra.update(epochs_run=1.1496, time_budget_s=173.2)
    full = pretrain("mae", 4, 0.05)
    full.extra.update(epochs_run=4.0)
    path = tmp_path / "records.jsonl"
    probe = fmnist("emae", 4, value=80.7, extra=dict(time_budget_s=173.2))  # the budget's variant, as its run's
    append_records(path, [budgeted, full, fmnist("mae", 4, value=83.2), probe])
    cost = cost_frame(records_frame(read_records(path)))
    shown = cost_table(cost).set_index("Method")["Epochs"]
    assert shown["EMAE (in 173 s)"] == "1.15 of 4" and shown["MAE"] == "4"
    (line,) = speedup_summary(cost)
    assert line.endswith("its best is 80.7 (1.15 of 4 epochs, 144 s).") and "MAE (4 epochs, 83.2" in line


@pytest.mark.parametrize("line, field", [
    ({"value": "70.4"}, "value"), ({"seed": True}, "seed"), ({"pretrain_epochs": 8.5}, "pretrain_epochs"),
    ({"config": []}, "config")])
def test_wrong_typed_records_are_rejected(tmp_path, line, field):
    path = tmp_path / "bad.jsonl"
    append_records(path, [make_record()])
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({**json.loads(make_record().to_json()), **line}) + "\n")
    with pytest.raises(EmaeError, match=rf"bad\.jsonl:2: field '{field}'"):
        read_records(path)


def test_records_missing_a_field_fail_the_report(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    obj = json.loads(make_record().to_json())
    del obj["hardware"]
    path.write_text(json.dumps(obj) + "\n", encoding="utf-8")
    assert cli.main(["report", "--records", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "bad.jsonl:1: record is missing the field 'hardware'" in capsys.readouterr().err


# --- the written report ----------------------------------------------------------------------------------------

def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_report_from_records_writes_every_format(tmp_path, records):
    out = tmp_path / "report"
    assert cli.main(["report", "--records", str(records.parent), "--out", str(out)]) == 0
    for name in ("report.md", "report.html", "report.tex", "summary.csv", "table_II.csv", "cost.csv"):
        assert (out / name).stat().st_size > 0, name
    for png in ("lp_vs_epochs.png", "accuracy_vs_wall_time.png"):
        assert png_size(out / png) == (640, 480)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count("<table") == len(SPECS) + 2 and page.count("data:image/png;base64,") == 2  # + summary, cost
    assert "70.3 ± 0.2 (Δ -0.1)" in page and "background-color" in page
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| EMAE (ours, imagenet-1k)" in md and "![lp_vs_epochs](lp_vs_epochs.png)" in md
    assert md.index("## Our runs side by side") < md.index("## Table I:")
    tex = (out / "report.tex").read_text(encoding="utf-8")
    assert tex.count(r"\toprule") == len(SPECS) + 2 and r"70.3 $\pm$ 0.2 ($\Delta$ -0.1)" in tex
    csv = pd.read_csv(out / "table_II.csv").set_index("Method")
    assert csv.loc["EMAE (ours, imagenet-1k)", "Linear Probing Top-1 Acc n"] == 3


def test_report_from_reference_alone(tmp_path):
    (tmp_path / "records").mkdir()
    written = report.write_report(tmp_path / "records", tmp_path / "out", ["html", "csv"])
    assert {p.name for p in written} >= {"report.html", "lp_vs_epochs.png", "table_XVI.csv"}
    assert not (tmp_path / "out" / "accuracy_vs_wall_time.png").exists()
    assert png_size(tmp_path / "out" / "lp_vs_epochs.png") == (640, 480)
    for spec in SPECS:
        name = spec.name
        csv = pd.read_csv(tmp_path / "out" / f"table_{name}.csv", keep_default_na=False)
        assert len(csv) == len(PAPER[name][1]) and set(csv["Source"]) == {"paper"}


def test_unknown_format_is_rejected():
    with pytest.raises(EmaeError, match="pdf"):
        report.parse_formats("md,pdf")


def test_training_curves_average_each_epoch_and_plot(tmp_path):
    from results import curves

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"batch_size": 256}))
    lines = [{"step": s, "epoch": 1 + (s > 2), "pixel_loss": float(s), "consistency_loss": 0.5,
              "prediction_spread": 0.1 * s} for s in range(1, 5)]
    (run / "log.txt").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert curves.main([str(run), "--names", "EMAE", "--out", str(tmp_path / "out"), "--bin", "2"]) == 0
    means = pd.read_csv(tmp_path / "out" / "curves.csv")
    assert means[["epoch", "pixel_loss", "prediction_spread"]].values.tolist() == [[1, 1.5, 0.15], [2, 3.5, 0.35]]
    assert (means["run"] == "EMAE").all() and (tmp_path / "out" / "curves.png").stat().st_size > 0
    (run / "log.txt").write_text('{"step": 1, "epoch": 1, "pixel_loss": 1.0}\n')
    with pytest.raises(EmaeError, match=r"log.txt: no \['consistency_loss', 'prediction_spread'\]"):
        curves.read_log(run)


def test_variants_name_what_differs_from_the_method_and_the_read_out():
    from results.tables import variant_of

    assert variant_of(make_record(method="emae", config={"consistency_weight": 1.0, "norm_pix_loss": True})) == ""
    assert variant_of(make_record(method="emae", extra={"consistency_weight": 0.3, "norm_pix_loss": False},
                                  config={"global_pool": "avg"})) == "w_sc=0.3, pixel targets"
    assert variant_of(make_record(method="parallel", protocol="knn", config={"global_pool": "token"},
                                  extra={"parts": 7})) == "K=7, cls token"
    assert variant_of(make_record(method="mae", protocol="pretrain", config={"global_pool": "token"})) == ""


# --- the figures -----------------------------------------------------------------------------------------------

def drawn(fig):
    """The figure laid out and drawn; its renderer, to measure what was drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def series_of(fig) -> dict[str, tuple]:
    """Every labelled line of the figure's axes: label -> (colour, marker), and that one label keeps one style."""
    from matplotlib.colors import to_hex

    styles = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            if not line.get_label().startswith("_"):
                style = (to_hex(line.get_color()), line.get_marker(), line.get_linestyle())
                assert styles.setdefault(line.get_label(), style) == style, line.get_label()
    return styles


def seeded_study() -> list[Record]:
    """Fashion-MNIST runs where the seeds differ by a fraction of a point, with both baselines."""
    recs = []
    for seed, jitter in enumerate((-0.05, 0.0, 0.05)):
        for epochs, acc in ((1, 79.5), (2, 81.1), (4, 82.0)):
            recs.append(fmnist("mae", epochs, value=acc + jitter, seed=seed))
            recs.append(pretrain("mae", epochs, 0.05 * epochs, seed=seed))
        for epochs, acc in ((1, 78.7), (2, 79.2)):
            recs.append(fmnist("emae", epochs, value=acc + 2 * jitter, seed=seed))
            recs.append(pretrain("emae", epochs, 0.12 * epochs, seed=seed))
        recs.append(fmnist("untrained", 0, value=77.7 + jitter, seed=seed))
        recs.append(make_record(method="pixels", arch="pixels", pretrain_epochs=0, pretrain_data="none",
                                dataset="fashion-mnist", value=84.2 + jitter, seed=seed))
    for method, fields in (("emae", {"consistency_weight": 0.3}), ("emae", {"norm_pix_loss": False}),
                           ("parallel", {})):
        recs.append(fmnist(method, 1, value=79.8, extra=fields))
        recs.append(fmnist(method, 1, "pretrain", 0.1, metric="loss", wall_time_s=360.0,
                           extra=dict(pretrain(method, 1, 0.1).extra, **fields)))
    return recs


def test_series_styles_are_distinct_and_methods_keep_theirs():
    from results.plots import COLORS, MARKERS, SPARE_STYLES, series_styles

    series = {"MAE": "mae", "EMAE": "emae", "EMAE w_sc=0.3": "emae", "EMAE pixel targets": "emae",
              "parallel mask": "parallel", "MAE mask ratio 85.7%": "mae"}
    styles = series_styles(series)
    assert len({s["color"] for s in styles.values()}) == len({s["marker"] for s in styles.values()}) == len(series)
    assert styles["MAE"] == {"color": COLORS["mae"], "marker": MARKERS["mae"]}
    assert series_styles({"EMAE": "emae", "MAE": "mae"}) == {k: styles[k] for k in ("EMAE", "MAE")}  # stable
    too_many = {f"EMAE K={k}": "emae" for k in range(len(SPARE_STYLES) + 1)}
    with pytest.raises(EmaeError, match="series in one figure"):
        series_styles(too_many)


def error_bars(ax) -> set[float]:
    """The lengths of the error bars drawn in ``ax``, rounded to 3 decimals."""
    return {round(float(seg[1][1] - seg[0][1]), 3) for c in ax.containers for seg in c.lines[2][0].get_segments()}


def check_layout(fig, renderer):
    """The legend off every axes; no title overlapping another title or the legend."""
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent(renderer)), "the legend covers an axes"
    titles = [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.get_title()]
    for i, a in enumerate(titles):
        assert not a.overlaps(box)
        assert not any(a.overlaps(b) for b in titles[i + 1:]), "two titles overlap"
        assert 0 <= a.x0 and a.x1 <= fig.bbox.width  # inside the figure


def check_baselines(ax, expected: dict[str, float]):
    """Each baseline a horizontal line across the axes of the runs, at its mean."""
    lines = {line.get_label(): line for line in ax.get_lines()}
    for label, mean in expected.items():
        line = lines[label]
        assert list(line.get_xdata()) == [0, 1] and line.get_transform() == ax.get_yaxis_transform()
        assert line.get_ydata()[0] == pytest.approx(mean)
    assert any(not line.get_label().startswith("_") and label not in expected for label, line in lines.items())


def test_table_xii_figure_reads_right(reference):
    from results.plots import MIN_SPAN, epochs_figure

    ours = records_frame(seeded_study())
    fig = epochs_figure(build_table(SPEC_BY_NAME["XII"], reference, ours))
    renderer = drawn(fig)
    styles = series_of(fig)
    runs = {k: v for k, v in styles.items() if k not in ("untrained backbone", "raw pixels")}
    assert {"MAE", "EMAE", "EMAE w_sc=0.3", "EMAE pixel targets", "parallel mask"} <= set(runs)
    assert len({c for c, _, _ in runs.values()}) == len({m for _, m, _ in runs.values()}) == len(runs)
    assert len(fig.axes) == 2  # the paper's panel and ours: no panel of its own for raw pixels
    paper_ax, ours_ax = fig.axes
    assert paper_ax.get_title().startswith("paper") and ours_ax.get_title().startswith("ours")
    check_baselines(ours_ax, {"untrained backbone": 77.7, "raw pixels": 84.2})
    assert "untrained backbone" not in {line.get_label() for line in paper_ax.get_lines()}
    low, high = ours_ax.get_ylim()
    assert low < 77.7 - 0.05 and high > 84.2 + 0.05 and high - low >= MIN_SPAN
    check_layout(fig, renderer)
    # seeds 0.05 apart, alone: the y-range still spans MIN_SPAN, with error bars of their spread
    mae_only = records_frame([r for r in seeded_study() if r.method == "mae" and r.protocol == "linprobe"])
    fig = epochs_figure(build_table(SPEC_BY_NAME["XII"], reference, mae_only))
    drawn(fig)
    low, high = fig.axes[1].get_ylim()
    assert high - low >= MIN_SPAN and low < 79.45 and high > 82.05
    assert error_bars(fig.axes[1]) >= {0.1}  # MAE's seeds: ± 0.05


def test_wall_time_figure_reads_right():
    from results.plots import MIN_SPAN, wall_time_figure

    ours = records_frame(seeded_study())
    fig = wall_time_figure(cost_frame(ours), ours)
    renderer = drawn(fig)
    (ax,) = fig.axes
    styles = series_of(fig)
    runs = {k: v for k, v in styles.items() if k not in ("untrained backbone", "raw pixels")}
    assert set(runs) == {"MAE", "EMAE", "EMAE w_sc=0.3", "EMAE pixel targets", "parallel mask"}
    assert len({c for c, _, _ in runs.values()}) == len({m for _, m, _ in runs.values()}) == len(runs)
    check_baselines(ax, {"untrained backbone": 77.7, "raw pixels": 84.2})
    low, high = ax.get_ylim()
    assert low < 77.7 and high > 84.2 and high - low >= MIN_SPAN
    assert error_bars(ax) >= {0.1, 0.2}  # MAE's seeds: ± 0.05, EMAE's: ± 0.1
    check_layout(fig, renderer)


def test_reconstruction_rows_name_the_statistics_they_used(reference):
    def ssim(method, unnorm, value, **extra):
        return make_record(method=method, protocol="reconstruction", metric="ssim", value=value,
                           extra=dict(norm_pix=True, unnorm=unnorm, **extra))

    recs = [ssim("mae", "visible", 0.61), ssim("mae", "target", 0.69), ssim("emae", "visible", 0.60)]
    shown = build_table(SPEC_BY_NAME["XVI"], reference, records_frame(recs)).display().set_index("Method")
    assert shown.loc["MAE (ours, imagenet-1k, ViT-B, visible patches' statistics)", "SSIM"] == "0.610"
    assert shown.loc["MAE (ours, imagenet-1k, ViT-B, masked patches' own statistics (leaks))", "SSIM"] == "0.690"
    # the reference data does not record which statistics the paper's SSIM used: no difference to it is shown
    assert shown.loc["EMAE (ours, imagenet-1k, ViT-B, visible patches' statistics)", "SSIM"] == "0.600"
    pixels = make_record(method="mae", protocol="reconstruction", metric="ssim", extra=dict(norm_pix=False))
    assert records_frame([pixels])["variant"].item() == ""  # a pixel-target model needs no statistics
    with pytest.raises(EmaeError, match=r"reconstruction record of mae \(ssim\).*extra\['unnorm'\] is None"):
        records_frame([make_record(method="mae", protocol="reconstruction", metric="ssim", extra=dict(norm_pix=True))])
