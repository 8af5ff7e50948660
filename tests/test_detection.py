"""The detectron2 adapter: configs, the scenes dataset, the backbone hand-off, errors, train + eval + resume."""
from __future__ import annotations

import argparse
import json
import math
from datetime import timedelta
from itertools import chain
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

pytest.importorskip("detectron2")

from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.config import instantiate  # noqa: E402
from detectron2.layers import Conv2d, NaiveSyncBatchNorm, get_norm  # noqa: E402
from detectron2.structures import BitMasks, Boxes, Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from pycocotools import mask as mask_utils  # noqa: E402

from detection import cli as detect_cli  # noqa: E402
from detection.checkpoint import SafeCheckpointer, load_backbone, prepare_backbone  # noqa: E402
from detection.datasets import find_split, read_categories  # noqa: E402
from detection.synthetic import SceneSpec, make_dataset  # noqa: E402
from detection.train import (  # noqa: E402
    METRICS,
    DetectConfig,
    available_configs,
    check_encoder,
    load_config,
    record_config,
)
from emae import cli, progress  # noqa: E402
from emae.checkpoint import save_checkpoint  # noqa: E402
from emae.config import FASHION_MNIST_DIR  # noqa: E402
from emae.errors import EmaeError  # noqa: E402
from emae.export import export_checkpoint  # noqa: E402
from emae.export.detectron2 import DROPPED, PREFIX  # noqa: E402
from emae.models import MaskedAutoencoderViT, build_model  # noqa: E402
from emae.records import Record, append_records, provenance, read_records, sha256_file  # noqa: E402

PROTOCOLS = {"vitdet-mask-rcnn", "vitdet-cascade-mask-rcnn", "vit-fpn-mask-rcnn"}
CPU_CONFIGS = ("_tiny", "_fmnist")  # the configs of the Fashion-MNIST scenes, not of the paper
SMALL = "vitdet_mask_rcnn_small_fmnist"


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
    if not name.endswith(CPU_CONFIGS):  # the paper's settings: 1024 px, LSJ 0.1-2.0, batch 64
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


def _head_nodes(cfg) -> list:
    """The LazyConfig nodes of a config's box head(s) (one, or a cascade's three) and mask head."""
    heads = cfg.model.roi_heads
    return [*(heads.box_heads if "box_heads" in heads else [heads.box_head]), heads.mask_head]


@pytest.mark.parametrize("name", available_configs())
def test_heads_train_on_a_batch_without_rois(name):
    """The crop can leave every image of a GPU without an instance; its mask head then gets no RoI. Every
    config's heads train on that (detectron2's ``Conv2d`` refuses it with ``nn.SyncBatchNorm``)."""
    for node in _head_nodes(load_config(name, [])):
        head = instantiate(node).train()
        shape = node.input_shape
        rois = torch.zeros(0, shape.channels, shape.height, shape.width, requires_grad=True)
        out = head.layers(rois) if hasattr(head, "layers") else head(rois)  # a mask head's layers take the RoIs
        out.sum().backward()
        assert out.shape[0] == 0 and rois.grad.shape == rois.shape


TINY = 64  # the image size of the small model built from vit_fpn_mask_rcnn_vit_b


def _small_vit_fpn(opts: tuple[str, ...] = ()) -> nn.Module:
    """``vit_fpn_mask_rcnn_vit_b``'s model, in training mode, with a 32-wide ViT on 64-px images (2x2
    windows) and 16 RoIs per image: its pyramid, FPN, heads and norms as the config builds them."""
    cfg = load_config("vit_fpn_mask_rcnn_vit_b", list(opts))
    cfg.model.backbone.bottom_up.net.update(img_size=TINY, embed_dim=32, num_heads=2, window_size=2)
    cfg.model.backbone.square_pad = TINY
    cfg.model.roi_heads.batch_size_per_image = 16
    torch.manual_seed(0)
    return instantiate(cfg.model).train()


def _step_without_instances(model: nn.Module) -> dict[str, float]:
    """One training forward and backward of a batch of one image with no instance; returns the losses."""
    instances = Instances((TINY, TINY), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.long),
                          gt_masks=BitMasks(torch.zeros(0, TINY, TINY, dtype=torch.bool)))
    batch = [{"image": torch.rand(3, TINY, TINY) * 255, "height": TINY, "width": TINY, "instances": instances}]
    with EventStorage():
        losses = model(batch)
    sum(losses.values()).backward()
    return {key: value.item() for key, value in losses.items()}


def test_vit_fpn_trains_on_an_image_without_instances():
    """vit_fpn_mask_rcnn_vit_b's norms (GroupNorm in the 4x up-sampling, NaiveSyncBatchNorm with stats_mode
    "N" in the heads) and a training step on an image whose instances the crop removed: its mask head gets no
    RoI. With nn.SyncBatchNorm in the mask head, the former config's, that step stops."""
    model = _small_vit_fpn()
    assert isinstance(model.backbone.bottom_up.resamplers[0][1], nn.GroupNorm)  # the paper's 4x up-sampling
    heads = chain(model.roi_heads.box_head.modules(), model.roi_heads.mask_head.modules())
    norms = [m.norm for m in heads if isinstance(m, Conv2d) and m.norm is not None]
    assert len(norms) == 8 and all(isinstance(n, NaiveSyncBatchNorm) and n._stats_mode == "N" for n in norms)

    losses = _step_without_instances(model)
    assert all(math.isfinite(v) for v in losses.values()) and losses["loss_mask"] == 0.0
    assert model.backbone.bottom_up.net.patch_embed.proj.weight.grad is not None
    with pytest.raises(AssertionError, match="SyncBatchNorm does not support empty inputs"):
        _step_without_instances(_small_vit_fpn(("model.roi_heads.mask_head.conv_norm=SyncBN",)))


def _two_process_norm(rank: int, norm: str, out: str) -> None:
    """A rank of :func:`test_heads_norm_takes_a_process_without_rois`: rank 0 has no RoI, rank 1 three; the
    norm's forward and a backward in training mode; saves the RoIs, the output and their gradient."""
    dist.init_process_group("gloo", init_method=f"file://{out}/store", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))
    try:
        torch.manual_seed(0)
        rois = torch.randn(3, 4, 5, 5)[: 3 * rank].requires_grad_()
        result = get_norm(norm, 4).train()(rois)
        (result * torch.arange(result.numel()).reshape(result.shape)).sum().backward()
        torch.save({"rois": rois.detach(), "out": result.detach(), "grad": rois.grad}, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_heads_norm_takes_a_process_without_rois(tmp_path):
    """With two processes (gloo on the CPU), the heads' norm of vit_fpn_mask_rcnn_vit_b runs on a process that
    has no RoI, and weighting by RoIs gives the other the statistics and gradient of its own RoIs alone."""
    norm = load_config("vit_fpn_mask_rcnn_vit_b", []).model.roi_heads.mask_head.conv_norm
    torch.multiprocessing.spawn(_two_process_norm, args=(norm, str(tmp_path)), nprocs=2)
    empty, full = (torch.load(tmp_path / f"{rank}.pt") for rank in range(2))
    assert empty["out"].shape == empty["grad"].shape == (0, 4, 5, 5)
    rois = full["rois"].requires_grad_()
    expected = F.batch_norm(rois, None, None, training=True)  # one process's BatchNorm of the same RoIs
    (expected * torch.arange(expected.numel()).reshape(expected.shape)).sum().backward()
    assert torch.allclose(full["out"], expected, atol=1e-5) and torch.allclose(full["grad"], rois.grad, atol=1e-4)


@pytest.mark.fmnist
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


def _resolve(*args: str) -> DetectConfig:
    parser = argparse.ArgumentParser()
    detect_cli.add_arguments(parser)
    return detect_cli.resolve_config(parser.parse_args(args))


def test_config_file_gives_values_that_flags_override(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "detect.yaml").write_text("config: vit_fpn_mask_rcnn_tiny\ndata: scenes\nopts: [train.max_iter=8]\n"
                                          "num_gpus: 2\ndist_timeout: 60\n")
    cfg = _resolve("--config-file", "detect.yaml", "--checkpoint", "ckpt.pth", "--num-gpus", "1")
    assert cfg == DetectConfig(checkpoint=str(tmp_path / "ckpt.pth"), config="vit_fpn_mask_rcnn_tiny",
                               data=str(tmp_path / "scenes"), output_dir=str(tmp_path / "runs" / "detect"),
                               opts=("train.max_iter=8",), num_gpus=1, dist_timeout=60)
    # --config names the LazyConfig, as before: the flag overrides the file's key
    assert _resolve("--config-file", "detect.yaml", "--checkpoint", "c", "--config", "vitdet_mask_rcnn_tiny",
                    "--opts", "train.max_iter=2", "train.seed=1").config == "vitdet_mask_rcnn_tiny"
    (tmp_path / "typo.yaml").write_text("checkpoint: c\nconfig: vitdet_mask_rcnn_tiny\ndata: d\nopt: [a=1]\n")
    with pytest.raises(EmaeError, match=r"typo.yaml: unknown config key\(s\) \['opt'\]"):
        _resolve("--config-file", "typo.yaml")
    with pytest.raises(EmaeError, match="data is required: give --data or the key 'data' in --config-file"):
        _resolve("--checkpoint", "c", "--config", "vitdet_mask_rcnn_tiny")


def _old_settings(cfg: DetectConfig) -> dict:
    """The ``settings.json`` an older version wrote for the run of ``cfg``: the config without dist_timeout."""
    return {k: v for k, v in cfg.to_dict().items() if k != "dist_timeout"}


@pytest.mark.parametrize("saved", ["settings.json", "config.json"])
def test_a_folder_of_a_run_is_recognised_by_its_saved_config(saved, tiny_checkpoint, tmp_path, capsys):
    """A folder with the records of a finished run and its saved config (``settings.json`` of an older version,
    or ``config.json``): the same command finds it finished, one that changes a result refuses it."""
    out = tmp_path / "run"
    command = _detect("--checkpoint", str(tiny_checkpoint), "--config", "vitdet_mask_rcnn_tiny", "--data",
                      str(tmp_path / "scenes"), "--output-dir", str(out), "--opts", "train.max_iter=8")
    cfg = _resolve(*command[2:])
    out.mkdir()
    (out / saved).write_text(json.dumps(_old_settings(cfg) if saved == "settings.json" else cfg.to_dict()))
    base = dict(method="emae", arch="vit_tiny_fmnist", pretrain_epochs=1, pretrain_data="fashion-mnist",
                protocol="vitdet-mask-rcnn", dataset="fmnist-scenes val", seed=0, extra={},
                **provenance(record_config(cfg), tiny_checkpoint, 1.0, sha256_file(tiny_checkpoint)))
    append_records(out / "records.jsonl", [Record(metric=m, value=1.0, **base) for m in METRICS])
    before = sorted(p.name for p in out.iterdir())

    assert cli.main(command + ["--device", "cpu", "--dist-timeout", "60"]) == 0  # how it runs may change
    assert "has finished" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == before  # nothing written

    assert cli.main(command[:-1] + ["train.max_iter=9"]) == 2
    err = capsys.readouterr().err
    assert f"{out / saved}: this folder holds a run with other settings (opts: [['train.max_iter=8']])" in err


@pytest.mark.fmnist
def test_checkpoint_of_another_size_is_refused(scenes, tmp_path, capsys):
    model = MaskedAutoencoderViT(img_size=32, patch_size=4, in_chans=1, embed_dim=192, depth=4, num_heads=3,
                                 decoder_embed_dim=64, decoder_depth=1, decoder_num_heads=2)
    save_checkpoint({"model": model.state_dict()}, tmp_path / "wide.pth")
    code = cli.main(_detect("--checkpoint", str(tmp_path / "wide.pth"), "--config", "vitdet_mask_rcnn_tiny",
                            "--data", str(scenes), "--output-dir", str(tmp_path / "out")))
    err = capsys.readouterr().err
    assert code == 2
    assert "width 192, depth 4, heads 3" in err and "does not fit detection config 'vitdet_mask_rcnn_tiny' " \
        "(width 128, heads 4)" in err


@pytest.mark.fmnist
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
    settings = dict(checkpoint=str(tiny_checkpoint), config="vitdet_mask_rcnn_tiny", data=str(scenes),
                    output_dir=str(out), train_split=None, val_split=None, opts=command[-3:], device="auto",
                    num_gpus=1)  # the records' config, as before config.json
    assert first.config == dict(settings, detectron2_config=str(out / "config.yaml"))
    assert json.loads((out / "config.json").read_text()) == dict(settings, dist_timeout=1800)

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
    assert f"{out / 'config.json'}: this folder holds a run with other settings (opts" in capsys.readouterr().err


def _scene_batch(size: int = 96) -> list[dict]:
    """One grey scene with one 30-px item, as detectron2's training mapper gives it."""
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[20:50, 30:60] = True
    instances = Instances((size, size), gt_boxes=Boxes(torch.tensor([[30.0, 20.0, 60.0, 50.0]])),
                          gt_classes=torch.tensor([3]), gt_masks=BitMasks(mask[None]))
    return [{"image": torch.rand(1, size, size) * 255, "height": size, "width": size, "instances": instances}]


def test_small_config_fits_the_fmnist_small_backbone(small_checkpoint, tiny_checkpoint, tmp_path):
    """vitdet_mask_rcnn_small_fmnist with 8-px patches: 4x4 windows (the pre-training grid), pyramid levels at
    strides 4, 8, 16 where the anchors and the RoI poolers expect them, the fmnist-small checkpoint loads whole,
    a training step reaches the patch embedding; the 4-px tiny checkpoint does not fit."""
    cfg = load_config(SMALL, [])
    net = cfg.model.backbone.net
    assert (net.patch_size, net.window_size, net.img_size, net.window_block_indexes) == (8, 4, 96, [0, 2])
    torch.manual_seed(0)
    model = instantiate(cfg.model).train()
    strides = {name: shape.stride for name, shape in model.backbone.output_shape().items()}
    assert strides == {"p2": 4, "p3": 8, "p4": 16}
    assert [strides[f] for f in cfg.model.proposal_generator.in_features] == \
        list(cfg.model.proposal_generator.anchor_generator.strides)
    for pooler in (model.roi_heads.box_pooler, model.roi_heads.mask_pooler):
        assert [1 / level.spatial_scale for level in pooler.level_poolers] == [4, 8, 16]

    backbone = prepare_backbone(small_checkpoint, tmp_path)
    report = load_backbone(SafeCheckpointer(model), backbone)
    assert report["loaded"] == len(torch.load(backbone.path, weights_only=True)["model"])
    assert set(report["missing_in_vit"]) == {f"{PREFIX}blocks.{i}.attn.rel_pos_{a}" for i in range(4) for a in "hw"}
    with EventStorage():
        losses = model(_scene_batch())
    sum(losses.values()).backward()
    assert all(math.isfinite(v.item()) for v in losses.values()) and losses["loss_mask"] > 0
    assert model.backbone.net.patch_embed.proj.weight.grad.abs().sum() > 0

    tiny = prepare_backbone(tiny_checkpoint, tmp_path / "tiny")
    with pytest.raises(EmaeError, match=f"does not fit detection config '{SMALL}' \\(patch 8\\)"):
        check_encoder(tiny.info, net, SMALL, str(tiny_checkpoint))


@pytest.mark.fmnist
@pytest.mark.slow
def test_small_config_trains_writes_its_last_checkpoint_only_and_reports_progress(small_checkpoint, scenes,
                                                                                 tmp_path, monkeypatch):
    """A short run of vitdet_mask_rcnn_small_fmnist: records, the final checkpoint and no other, one progress
    report per training iteration and per evaluated batch (8 validation scenes in batches of 4)."""
    calls = []
    monkeypatch.setattr(progress, "report", lambda *args: calls.append(args))
    out = tmp_path / "run"
    assert cli.main(_detect("--checkpoint", str(small_checkpoint), "--config", SMALL, "--data", str(scenes),
                            "--output-dir", str(out), "--opts", "train.max_iter=3")) == 0
    assert sorted(r.metric for r in read_records(out / "records.jsonl")) == sorted(METRICS)
    assert sorted(p.name for p in out.glob("model_*.pth")) == ["model_final.pth"]
    assert [c for c in calls if c[3] == "train"] == [(i, 3, "iters", "train") for i in (1, 2, 3)]
    assert [c for c in calls if c[3] == "eval"] == [(i, 2, "batches", "eval") for i in (0, 1, 2)]
    assert calls[-1][3] == "eval"  # the evaluation follows the training
