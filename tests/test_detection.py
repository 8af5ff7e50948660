"""The detectron2 adapter: configs, the scenes dataset, the backbone hand-off, errors, train + eval + resume."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("detectron2")

from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.config import instantiate  # noqa: E402
from pycocotools import mask as mask_utils  # noqa: E402

from detection.checkpoint import SafeCheckpointer, load_backbone, prepare_backbone  # noqa: E402
from detection.datasets import find_split, read_categories  # noqa: E402
from detection.synthetic import SceneSpec, make_dataset  # noqa: E402
from detection.train import METRICS, available_configs, load_config  # noqa: E402
from emae import cli  # noqa: E402
from emae.checkpoint import save_checkpoint  # noqa: E402
from emae.config import FASHION_MNIST_DIR, PretrainConfig  # noqa: E402
from emae.errors import EmaeError  # noqa: E402
from emae.export import export_checkpoint  # noqa: E402
from emae.export.detectron2 import DROPPED, PREFIX  # noqa: E402
from emae.models import MaskedAutoencoderViT, build_model  # noqa: E402
from results.records import read_records  # noqa: E402

PROTOCOLS = {"vitdet-mask-rcnn", "vitdet-cascade-mask-rcnn", "vit-fpn-mask-rcnn"}
needs_fmnist = pytest.mark.skipif(not Path(FASHION_MNIST_DIR).is_dir(), reason="Fashion-MNIST not installed")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised vit_tiny_fmnist MAE in the layout of ``emae pretrain``'s checkpoints."""
    torch.manual_seed(0)
    model = build_model("vit_tiny_fmnist", img_size=32, in_chans=1)
    path = tmp_path_factory.mktemp("pretrain") / "checkpoint.pth"
    save_checkpoint({"model": model.state_dict(), "config": PretrainConfig().to_dict()}, path)
    return path


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    if not Path(FASHION_MNIST_DIR).is_dir():
        pytest.skip("Fashion-MNIST not installed")
    root = tmp_path_factory.mktemp("scenes")
    make_dataset(root, train=32, val=8, spec=SceneSpec(), seed=0)
    return root


def _tiny_model(name: str = "vitdet_mask_rcnn_tiny"):
    return instantiate(load_config(name, []).model)


@pytest.mark.parametrize("name", available_configs())
def test_config_builds(name):
    cfg = load_config(name, [])
    assert cfg.benchmark.protocol in PROTOCOLS
    assert cfg.dataloader.evaluator.use_fast_impl is False
    net = cfg.model.backbone.net if "net" in cfg.model.backbone else cfg.model.backbone.bottom_up.net
    lr = instantiate(cfg.lr_multiplier)
    assert lr(0.0) == pytest.approx(0.001, rel=0.01) and lr(0.999) <= 0.1  # warm-up from 0.001, decays
    if "tiny" not in name:  # the paper's settings: 1024 px, LSJ 0.1-2.0, batch 64
        resize = cfg.dataloader.train.mapper.augmentations[1]
        assert (resize.min_scale, resize.max_scale, resize.target_height) == (0.1, 2.0, 1024)
        assert cfg.dataloader.train.total_batch_size == 64 and cfg.train.amp.enabled
        assert cfg.train.max_iter == 184375 and net.use_rel_pos and net.pretrain_img_size == 224
    if name.endswith("_vit_l"):  # ViT-L is only checked, not built: 300M parameters take long on a CPU
        assert (net.embed_dim, net.depth, net.num_heads, net.drop_path_rate) == (1024, 24, 16, 0.4)
        assert sorted(set(range(24)) - set(net.window_block_indexes)) == [5, 11, 17, 23]
        assert cfg.optimizer.params.lr_factor_func("backbone.net.blocks.0.mlp.fc1.weight") == pytest.approx(0.8**24)
        return
    model = instantiate(cfg.model)
    assert set(cfg.model.proposal_generator.in_features) <= set(model.backbone.output_shape())
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    if name.endswith("_vit_b") and name.startswith("vitdet"):
        assert sorted(set(range(12)) - set(net.window_block_indexes)) == [2, 5, 8, 11]
        assert cfg.optimizer.params.lr_factor_func("backbone.net.blocks.0.attn.qkv.weight") == pytest.approx(0.7**12)
    if "cascade" in name:
        assert len(model.roi_heads.box_predictor) == 3


@needs_fmnist
def test_scenes_are_coco_instances(scenes):
    split = find_split(scenes, "val")
    assert read_categories(split.json_file)[0] == "T-shirt/top"
    coco = json.loads(split.json_file.read_text())
    assert len(coco["images"]) == 8 and len(coco["categories"]) == 10
    per_image = {img["id"]: 0 for img in coco["images"]}
    for ann in coco["annotations"]:
        per_image[ann["image_id"]] += 1
        mask = mask_utils.decode(ann["segmentation"])
        assert mask.sum() == ann["area"] > 0
        x, y, w, h = ann["bbox"]
        ys, xs = np.nonzero(mask)
        assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert 1 <= ann["category_id"] <= 10
    assert all(1 <= n <= SceneSpec().max_items for n in per_image.values())


def test_export_loads_with_detectron2_checkpointer(tiny_checkpoint, tmp_path):
    path = export_checkpoint(tiny_checkpoint, tmp_path / "d2.pth", "detectron2")
    exported = torch.load(path, map_location="cpu", weights_only=True)  # plain tensors and values only
    tensors = exported["model"]
    encoder = build_model("vit_tiny_fmnist", 32, 1).state_dict()
    encoder_keys = {k for k in encoder if not k.startswith(("decoder_", "mask_token"))}
    assert {k[len(PREFIX):] for k in tensors} == encoder_keys - set(DROPPED)

    model = _tiny_model()
    extra = DetectionCheckpointer(model).load(str(path))  # detectron2's own checkpointer
    assert set(extra) == {"config", "encoder", "source", "target"}
    state = model.state_dict()
    for key, value in tensors.items():
        assert torch.equal(state[key], value), key

    checkpointer = SafeCheckpointer(model)
    report = load_backbone(checkpointer, prepare_backbone(path, tmp_path))
    rel_pos = {f"{PREFIX}blocks.{i}.attn.rel_pos_{a}" for i in range(4) for a in "hw"}
    outside = {k for k in state if not k.startswith(PREFIX) and k not in ("pixel_mean", "pixel_std")}
    assert set(checkpointer.report.missing_keys) == rel_pos | outside
    assert checkpointer.report.unexpected_keys == [] and checkpointer.report.incorrect_shapes == []
    assert report["loaded"] == len(tensors) and set(report["missing_in_vit"]) == rel_pos


def test_fpn_model_takes_the_same_export(tiny_checkpoint, tmp_path):
    backbone = prepare_backbone(tiny_checkpoint, tmp_path)  # our checkpoint, converted on the way
    assert backbone.path == tmp_path / "backbone_detectron2.pth" and backbone.info.embed_dim == 128
    model = _tiny_model("vit_fpn_mask_rcnn_tiny")
    report = load_backbone(SafeCheckpointer(model), backbone)
    tensors = torch.load(backbone.path, weights_only=True)["model"]
    assert report["loaded"] == len(tensors)
    state = model.state_dict()
    for key, value in tensors.items():
        assert torch.equal(state["backbone.bottom_up.net." + key[len(PREFIX):]], value), key


def test_load_report_refuses_weights_without_a_place(tiny_checkpoint, tmp_path):
    model = instantiate(load_config("vitdet_mask_rcnn_tiny", ["model.backbone.net.depth=3"]).model)
    with pytest.raises(EmaeError, match=r"weights have no place in the model.*blocks\.3\."):
        load_backbone(SafeCheckpointer(model), prepare_backbone(tiny_checkpoint, tmp_path))


def test_missing_annotation_file_is_named(tmp_path):
    (tmp_path / "val").mkdir()
    with pytest.raises(EmaeError, match=str(tmp_path / "annotations" / "instances_val.json")):
        find_split(tmp_path, "val")


def _detect(*args: str) -> list[str]:
    return ["eval", "detect", *args]


@needs_fmnist
def test_checkpoint_of_another_size_is_refused(scenes, tmp_path, capsys):
    model = MaskedAutoencoderViT(img_size=32, patch_size=4, in_chans=1, embed_dim=192, depth=4, num_heads=3,
                                 decoder_embed_dim=64, decoder_depth=1, decoder_num_heads=2)
    save_checkpoint({"model": model.state_dict()}, tmp_path / "wide.pth")
    code = cli.main(_detect("--checkpoint", str(tmp_path / "wide.pth"), "--config", "vitdet_mask_rcnn_tiny",
                            "--data", str(scenes), "--output-dir", str(tmp_path / "out")))
    err = capsys.readouterr().err
    assert code == 2
    assert "'patch_embed.proj.weight' has shape (192, 1, 4, 4)" in err and "(128, 1, 4, 4)" in err


@needs_fmnist
def test_train_eval_resume_without_duplicate_records(tiny_checkpoint, scenes, tmp_path, capsys):
    out = tmp_path / "run"
    command = _detect("--checkpoint", str(tiny_checkpoint), "--config", "vitdet_mask_rcnn_tiny", "--data",
                      str(scenes), "--output-dir", str(out), "--opts", "train.max_iter=8",
                      "train.checkpointer.period=4", "model.roi_heads.box_predictor.test_score_thresh=0.0")
    assert cli.main(command) == 0
    records = read_records(out / "records.jsonl")
    assert sorted(r.metric for r in records) == sorted(METRICS)
    assert all(math.isfinite(r.value) and 0 <= r.value <= 100 for r in records)
    first = records[0]
    assert (first.protocol, first.method, first.arch, first.dataset) == (
        "vitdet-mask-rcnn", "emae", "vit_tiny_fmnist", "fmnist-scenes val")  # as segmentation names its scenes
    assert (out / "config.yaml").is_file() and (out / "backbone_load_report.json").is_file()

    assert cli.main(command) == 0  # finished: nothing runs again, nothing is written twice
    assert "has finished" in capsys.readouterr().out
    assert len(read_records(out / "records.jsonl")) == len(METRICS)

    # a run killed after the checkpoint of iteration 4 resumes from there
    (out / "records.jsonl").unlink()
    (out / "model_final.pth").unlink()
    (out / "last_checkpoint").write_text("model_0000003.pth")
    assert cli.main(command) == 0
    records = read_records(out / "records.jsonl")
    assert len(records) == len(METRICS) and records[0].extra["resumed_from_iter"] == 4

    changed = [c if c != "train.max_iter=8" else "train.max_iter=9" for c in command]
    assert cli.main(changed) == 2
    assert "other settings (opts" in capsys.readouterr().err
