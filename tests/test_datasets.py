"""One name per dataset in the records: detection and segmentation scenes alike, old records mapped when read."""
import json

import pytest

from emae.records import SCENES, canonical_dataset, folder_dataset_name, read_records, record_dataset
from results.summary import summary_frames
from results.tables import records_frame


@pytest.mark.parametrize("old, new", [
    ("detection/val", "fmnist-scenes val"),  # the pipeline's scenes, named by their folder
    ("fmnist-det/val", "fmnist-scenes val"),
    ("coco/val2017", "COCO val2017"),
    ("my-scenes/val", "my-scenes val"),  # any other FOLDER/SPLIT of an old detection record
    ("fmnist-scenes val", "fmnist-scenes val"),  # today's names stay
    ("fashion-mnist test", "fashion-mnist test"),
    ("ADE20K val", "ADE20K val"),
])
def test_old_dataset_names_map_to_todays(old, new):
    assert canonical_dataset(old) == new


def test_the_report_puts_old_and_new_records_of_the_same_data_in_one_row(tmp_path, record):
    detect = dict(record, protocol="vitdet-mask-rcnn", metric="APb", method="emae", pretrain_epochs=4)
    lines = [dict(detect, dataset="detection/val", value=8.0, seed=0),
             dict(detect, dataset="fmnist-scenes val", value=9.0, seed=1)]
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    records = read_records(tmp_path)
    assert {r.dataset for r in records} == {"fmnist-scenes val"}
    display, numbers = summary_frames(records_frame(records))
    assert len(display) == 1 and numbers["n"].tolist() == [2]


def test_a_folder_names_itself_else_the_config_else_the_folder(tmp_path):
    assert record_dataset(tmp_path, "val", "ADE20K val") == "ADE20K val"
    assert record_dataset(tmp_path, "val2017") == f"{tmp_path.name} val2017"
    (tmp_path / "meta.json").write_text(json.dumps({"name": "my-scenes"}))
    assert record_dataset(tmp_path, "val", "ADE20K val") == "my-scenes val"
    (tmp_path / "meta.json").write_text("{not json")
    assert folder_dataset_name(tmp_path) is None


@pytest.mark.fmnist
@pytest.mark.detectron2
@pytest.mark.mmseg
def test_detection_and_segmentation_scenes_are_named_alike(tmp_path):
    from detection.synthetic import make_dataset
    from detection.train import load_config
    from segmentation.config import build_config
    from segmentation.synthetic import generate

    make_dataset(tmp_path / "det", train=2, val=1)
    generate(tmp_path / "seg", train=2, val=1)
    detect_cfg, segment_cfg = load_config("vitdet_mask_rcnn_tiny", []), build_config("upernet_tiny_fmnist", ".", 0)
    detection = record_dataset(tmp_path / "det", detect_cfg.benchmark.val_split, detect_cfg.benchmark.dataset_name)
    segmentation = record_dataset(tmp_path / "seg", "val", segment_cfg.dataset_name)
    assert detection == segmentation == f"{SCENES} val"
    # a folder made before the scenes named themselves: the configs give the same name
    for folder in ("det", "seg"):
        (tmp_path / folder / "meta.json").unlink()
    assert record_dataset(tmp_path / "det", "val", detect_cfg.benchmark.dataset_name) == \
        record_dataset(tmp_path / "seg", "val", segment_cfg.dataset_name) == f"{SCENES} val"


@pytest.mark.fmnist
@pytest.mark.detectron2
def test_making_the_scenes_again_keeps_them_and_other_settings_are_refused(tmp_path):
    from detection.synthetic import make_dataset
    from emae.errors import EmaeError

    first = make_dataset(tmp_path / "det", train=2, val=1)
    stamp = (tmp_path / "det" / "annotations" / "instances_val.json").stat().st_mtime_ns
    assert make_dataset(tmp_path / "det", train=2, val=1) == first
    assert (tmp_path / "det" / "annotations" / "instances_val.json").stat().st_mtime_ns == stamp
    with pytest.raises(EmaeError, match="already holds a dataset made with other settings"):
        make_dataset(tmp_path / "det", train=3, val=1)
    assert not list(tmp_path.glob(".*.tmp"))
