"""The evaluation package: checkpoint loading and its key report, the three protocols on Fashion-MNIST
subsets, records, resume and skipping of finished work, and the timm export."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from timm.optim import create_optimizer_v2
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from emae.checkpoint import read_weights, save_safetensors
from emae.cli import main as cli_main
from emae.config import PretrainConfig
from emae.data import TFRandomResizedCrop
from emae.engine import train
from emae.errors import EmaeError
from emae.export import export_checkpoint
from emae.knn import knn_grid_scores
from emae.models import build_model
from emae.records import read_records
from evaluation import training
from evaluation.backbone import load_backbone
from evaluation.common import add_config_arguments, resolve_config, start_run
from evaluation.features import FrozenEncoder
from evaluation.finetune import FinetuneConfig, finetuned_accuracy, load_finetuned
from evaluation.finetune import run as run_finetune
from evaluation.knn import KnnConfig, knn_scores
from evaluation.knn import run as run_knn
from evaluation.linprobe import HeadGrid, LinprobeConfig, lars, train_transform
from evaluation.linprobe import run as run_linprobe

pytestmark = pytest.mark.fmnist

SMALL = dict(train_limit=2000, val_limit=1000, test_limit=1000, threads=1, num_workers=0)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One CPU thread: small ops are far faster than with threads competing for shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ours(tmp_path_factory) -> Path:
    """A checkpoint of ``emae pretrain`` (EMAE, tiny ViT, one epoch on 512 images)."""
    out = tmp_path_factory.mktemp("pretrain")
    summary = train(PretrainConfig(subset=512, epochs=1, batch_size=64, num_workers=0, output_dir=str(out)))
    return Path(summary["checkpoint"])


@pytest.fixture(scope="module")
def mae_state(ours) -> dict[str, torch.Tensor]:
    """The full MAE state dict (encoder and decoder, official key names) of the pre-trained checkpoint."""
    return torch.load(ours, weights_only=True)["model"]


@pytest.fixture(scope="module")
def official(tmp_path_factory, mae_state) -> Path:
    """The same weights in the official MAE layout: ``{"model": state}``, with the decoder, no config."""
    path = tmp_path_factory.mktemp("official") / "mae_visualize_vit_tiny.pth"
    torch.save({"model": mae_state}, path)
    return path


def _decoder_keys(state: dict) -> set[str]:
    return {k for k in state if k.startswith(("decoder_", "mask_token"))}


# ---------------------------------------------------------------- loading

@pytest.mark.parametrize("layout", ["ours", "official", "encoder-only", "timm-with-head", "export", "safetensors"])
@pytest.mark.parametrize("pool", ["token", "avg"])
def test_every_format_loads_with_an_exact_key_report(layout, pool, ours, official, mae_state, tmp_path):
    encoder = {k: v for k, v in mae_state.items() if k not in _decoder_keys(mae_state)}
    if layout == "ours":
        path, dropped = ours, _decoder_keys(mae_state)
    elif layout == "official":
        path, dropped = official, _decoder_keys(mae_state)
    elif layout == "encoder-only":
        path, dropped = tmp_path / "enc.pth", set()
        torch.save({"model": encoder}, path)
    elif layout == "timm-with-head":  # a plain timm state dict of a fine-tuned model with its 1000-way head
        path, dropped = tmp_path / "timm.pth", {"head.weight", "head.bias"}
        torch.save(dict(encoder, **{"head.weight": torch.zeros(1000, 128), "head.bias": torch.zeros(1000)}), path)
    elif layout == "export":
        path, dropped = export_checkpoint(ours, tmp_path / "timm.pth", "timm"), set()
    else:
        path, dropped = tmp_path / "enc.safetensors", set()
        save_safetensors(encoder, path)
    num_classes = 10 if pool == "avg" else 0
    model, report, weights = load_backbone(path, global_pool=pool, num_classes=num_classes)

    assert weights.arch == "vit_tiny_fmnist" and weights.info.num_heads == 4
    assert set(report.dropped) == dropped
    if pool == "token":
        assert report.missing == () and report.unexpected == ()
    else:  # MAE's fine-tuning head: fc_norm replaces norm, and a new classifier
        assert set(report.missing) == {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}
        assert set(report.unexpected) == {"norm.weight", "norm.bias"}
    assert set(report.loaded) == set(encoder) - set(report.unexpected)
    state = model.state_dict()
    assert all(torch.equal(state[k], encoder[k]) for k in report.loaded)
    assert (weights.config is not None) == (layout == "ours")


def test_timm_features_equal_the_mae_encoder(ours, mae_state):
    """The timm ViT computes what the pre-trained MAE encoder computes: the cls token after the final norm."""
    mae = build_model("vit_tiny_fmnist", 32, 1).eval()
    mae.load_state_dict(mae_state)
    model, _, _ = load_backbone(ours)
    images = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        expected = mae.forward_features(images)[:, 0]
        assert torch.allclose(model.eval()(images), expected, atol=1e-5)


def test_pos_embed_is_resampled_for_another_image_size(ours, mae_state):
    model, report, _ = load_backbone(ours, img_size=48)
    assert report.pos_embed_grid == (8, 12)
    assert model.pos_embed.shape == (1, 1 + 12 * 12, 128)
    original = mae_state["pos_embed"]
    assert torch.equal(model.pos_embed[:, :1], original[:, :1])  # the cls position is kept
    back = resample_abs_pos_embed(model.pos_embed.detach(), new_size=[8, 8], old_size=[12, 12])
    assert (back - original).abs().max() < 0.1 * original.abs().max()  # the same smooth embedding
    assert model(torch.randn(2, 1, 48, 48)).shape == (2, 128)
    same, report, _ = load_backbone(ours, img_size=32)
    assert report.pos_embed_grid is None and torch.equal(same.pos_embed, original)


def _corrupt(mae_state, tmp_path, change) -> Path:
    state = dict(mae_state)
    change(state)
    path = tmp_path / "bad.pth"
    torch.save({"model": state}, path)
    return path


@pytest.mark.parametrize("change, message", [
    (lambda s: s.__setitem__("blocks.1.attn.qkv.weight", torch.zeros(96, 128)), "shapes do not fit"),
    (lambda s: s.pop("blocks.3.mlp.fc2.weight"), "lacks ['blocks.3.mlp.fc2.weight']"),
    (lambda s: s.__setitem__("reg_token", torch.zeros(1, 1, 128)), "keys ['reg_token'] have no place"),
    (lambda s: s.pop("pos_embed"), "not a ViT encoder"),
])
def test_a_partial_or_misfit_load_is_an_error(change, message, mae_state, tmp_path):
    with pytest.raises(EmaeError) as e:
        load_backbone(_corrupt(mae_state, tmp_path, change))
    assert message in str(e.value) and "bad.pth" in str(e.value)


def test_fine_tuned_checkpoint_needs_average_pooling(mae_state, tmp_path):
    def finetuned(state):
        state["fc_norm.weight"], state["fc_norm.bias"] = state.pop("norm.weight"), state.pop("norm.bias")
    path = _corrupt(mae_state, tmp_path, finetuned)
    with pytest.raises(EmaeError, match="use global_pool avg"):
        load_backbone(path)
    _, report, _ = load_backbone(path, global_pool="avg", num_classes=10)
    assert set(report.missing) == {"head.weight", "head.bias"} and report.unexpected == ()


def test_wrong_architecture_and_missing_file_are_errors(ours, tmp_path):
    with pytest.raises(EmaeError, match="does not fit vit_base_patch16"):
        read_weights(ours, arch="vit_base_patch16")
    with pytest.raises(EmaeError, match="checkpoint not found"):
        read_weights(tmp_path / "nope.pth")


def test_cli_reports_bad_input_on_one_line(tmp_path, capsys):
    assert cli_main(["eval", "knn", "--checkpoint", str(tmp_path / "nope.pth")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nope.pth'}: checkpoint not found"
    assert cli_main(["eval", "linprobe", "--checkpoint", "x.pth", "--preset", "cifar"]) == 2
    assert "unknown evaluation preset 'cifar'" in capsys.readouterr().err


def test_timm_export_loads_with_create_model(ours, mae_state, tmp_path):
    path = export_checkpoint(ours, tmp_path / "vit_tiny.pth", "timm")
    shape = dict(img_size=32, patch_size=4, embed_dim=128, depth=4, num_heads=4, in_chans=1)
    encoder = {k: v for k, v in mae_state.items() if k not in _decoder_keys(mae_state)}
    strict = timm.create_model("vit_tiny_patch16_224", checkpoint_path=str(path), num_classes=0, **shape)
    overlay = timm.create_model("vit_tiny_patch16_224", pretrained=True, num_classes=10,
                                pretrained_cfg_overlay=dict(file=str(path)), **shape)
    for model in (strict, overlay):
        state = model.state_dict()
        assert set(encoder) <= set(state)
        assert all(torch.equal(state[k], v) for k, v in encoder.items())


# ---------------------------------------------------------------- protocols

def test_knn_scores_weight_each_neighbour():
    bank = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    scores = knn_scores(bank, labels, torch.tensor([[2.0, 0.0]]), num_classes=2, k=2, temperature=0.5)
    assert torch.allclose(scores, torch.tensor([[torch.e ** 2, torch.e ** 1.6]]))


def test_knn_grid_scores_are_each_k_scored_alone():
    """Every k of the grid from one similarity product equals knn_scores of that k (queries in several chunks)."""
    torch.manual_seed(0)
    bank, labels, queries = torch.randn(300, 16), torch.randint(0, 5, (300,)), torch.randn(70, 16)
    grid = knn_grid_scores(bank, labels, queries, 5, (1, 7, 40), 0.1, chunk=32)
    assert grid.shape == (3, 70, 5)
    for scores, k in zip(grid, (1, 7, 40)):
        torch.testing.assert_close(scores, knn_scores(bank, labels, queries, 5, k, 0.1, chunk=32))
    with pytest.raises(EmaeError, match="k=301 is larger than the 300 training images"):
        knn_grid_scores(bank, labels, queries, 5, (1, 301))


def test_knn_beats_chance_writes_a_record_and_is_not_rerun(ours, tmp_path, capsys):
    cfg = KnnConfig(checkpoint=str(ours), output_dir=str(tmp_path / "knn"), features_dir=str(tmp_path), **SMALL)
    (record,) = run_knn(cfg)
    assert record.protocol == "knn" and record.metric == "top1" and record.value > 40
    assert (record.method, record.arch, record.pretrain_epochs, record.pretrain_data) == \
           ("emae", "vit_tiny_fmnist", 1, "fashion-mnist")
    assert record.extra["train_images"] == 2000 and record.extra["val_images"] == record.extra["test_images"] == 1000
    assert record.extra["k"] in (10, 20, 100, 200) and record.extra["val_top1"] == max(record.extra["grid"].values())
    assert json.loads((tmp_path / "knn" / "config.json").read_text())["ks"] == [10, 20, 100, 200]
    assert run_knn(cfg) == [record]
    assert "already done" in capsys.readouterr().out
    assert read_records(tmp_path / "knn") == [record]


def test_fast_linear_probe_on_an_official_checkpoint(official, tmp_path, capsys):
    common = dict(checkpoint=str(official), features_dir=str(tmp_path), **SMALL)
    run_knn(KnnConfig(output_dir=str(tmp_path / "knn"), **common))
    capsys.readouterr()
    cfg = LinprobeConfig(fast=True, epochs=20, warmup_epochs=2, effective_batch=256, blrs=(1.0, 10.0),
                         output_dir=str(tmp_path / "lp"), pretrain_epochs=1600, pretrain_data="ImageNet-1K", **common)
    top1, top5 = run_linprobe(cfg)
    assert capsys.readouterr().out.count("reusing") == 3  # the kNN's features of the three splits, not extracted again
    assert top1.extra["features_reused"] is True
    assert top1.value > 40 and top5.value > top1.value
    assert (top1.method, top1.arch, top1.pretrain_epochs, top1.pretrain_data) == \
           ("mae", "vit_tiny_fmnist", 1600, "ImageNet-1K")
    grid = top1.extra["grid"]
    assert set(grid) == {"cls-last"} and set(grid["cls-last"]) == {"1.0", "10.0"} and top1.extra["mode"] == "fast"
    assert top1.extra["val_top1"] == max(max(cell) for cell in grid["cls-last"].values())


def test_full_linear_probe_resumes_after_a_kill_as_if_never_killed(ours, tmp_path, monkeypatch, capsys):
    def config(out):
        return LinprobeConfig(checkpoint=str(ours), output_dir=str(out), epochs=2, warmup_epochs=1, batch_size=64,
                              effective_batch=128, **dict(SMALL, train_limit=512, val_limit=256, test_limit=256))
    real_epoch, epochs_run, kill_at = training.train_one_epoch, [], [2]

    def counted(t, loader, step, desc):
        epochs_run.append(desc)
        if len(epochs_run) in kill_at:
            raise KeyboardInterrupt
        return real_epoch(t, loader, step, desc)

    monkeypatch.setattr(training, "train_one_epoch", counted)
    with pytest.raises(KeyboardInterrupt):
        run_linprobe(config(tmp_path / "killed"))
    assert not (tmp_path / "killed" / "records.jsonl").exists()
    kill_at.clear()
    top1, _ = run_linprobe(config(tmp_path / "killed"))
    assert epochs_run == ["epoch 1/2", "epoch 2/2", "epoch 2/2"]  # the first epoch is not trained again
    assert "resuming from" in capsys.readouterr().out
    uninterrupted, _ = run_linprobe(config(tmp_path / "whole"))
    assert top1.value == uninterrupted.value and top1.extra["mode"] == "full"
    killed, whole = (torch.load(tmp_path / d / "checkpoint.pth", weights_only=True) for d in ("killed", "whole"))
    assert all(torch.equal(killed["model"][k], whole["model"][k]) for k in whole["model"])
    assert set(whole["model"]) == {"heads.0.0.running_mean", "heads.0.0.running_var", "heads.0.0.num_batches_tracked",
                                   "heads.0.1.weight", "heads.0.1.bias"}  # BatchNorm without affine, then linear
    assert [e["epoch"] for e in killed["history"]] == [1, 2]


def test_frozen_encoder_stays_in_eval_mode_without_gradients(ours):
    model, _, _ = load_backbone(ours)
    frozen = FrozenEncoder(model).train()
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert not frozen(torch.randn(2, 1, 32, 32)).requires_grad


def test_short_fine_tune_beats_chance_and_its_checkpoint_gives_the_same_accuracy(ours, tmp_path, capsys):
    cfg = FinetuneConfig(checkpoint=str(ours), output_dir=str(tmp_path), epochs=1, warmup_epochs=0, batch_size=32,
                         effective_batch=32, blr=8e-3, layer_decay=0.75, drop_path=0.0, crop_min_scale=1.0, mixup=0.0,
                         cutmix=0.0, auto_augment="", reprob=0.0, **dict(SMALL, train_limit=3072, val_limit=500))
    top1, top5 = run_finetune(cfg)
    assert top1.protocol == "finetune" and top1.value > 40 and top5.value > top1.value
    assert set(top1.extra["load_report"]["missing"]) == {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}
    recomputed = finetuned_accuracy(tmp_path / "checkpoint.pth", device="cpu")
    assert recomputed["top1"] == pytest.approx(top1.value, abs=1e-4)
    assert recomputed["top5"] == pytest.approx(top5.value, abs=1e-4)
    model, saved = load_finetuned(tmp_path / "checkpoint.pth")
    assert saved == cfg and model.global_pool == "avg" and model.head.out_features == 10
    capsys.readouterr()
    assert run_finetune(cfg) == [top1, top5]
    assert "already done" in capsys.readouterr().out
    assert len(read_records(tmp_path)) == 2


def test_another_evaluation_in_the_same_folder_is_refused(ours, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(KnnConfig(checkpoint=str(ours), ks=(5,)).to_dict()))
    (tmp_path / "records.jsonl").touch()  # its results
    cfg = KnnConfig(checkpoint=str(ours), output_dir=str(tmp_path), ks=(20,))
    with pytest.raises(EmaeError, match=r"config.json: this folder holds a run with other settings \(ks: \[\[5\]\]\)"):
        start_run(cfg)
    (tmp_path / "records.jsonl").unlink()  # a folder with a config but no work yet is taken over
    run, done = start_run(cfg)
    assert done == [] and json.loads((tmp_path / "config.json").read_text())["ks"] == [5]  # nothing written yet
    run.open_folder()  # as the run does before its first output
    assert json.loads((tmp_path / "config.json").read_text())["ks"] == [20]


# ---------------------------------------------------------------- recipes

def test_layer_decay_follows_mae(ours):
    """timm's layer-wise decay on the fine-tuning model gives MAE's scales: head 1, block i decay^(depth - i),
    embeddings decay^(depth + 1); no weight decay on 1-D parameters, pos_embed and cls_token."""
    model, _, _ = load_backbone(ours, global_pool="avg", num_classes=10)
    optimizer = create_optimizer_v2(model, "adamw", lr=1.0, weight_decay=0.05, layer_decay=0.5)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {names[id(p)]: (g["lr_scale"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    assert groups["head.weight"] == (1.0, 0.05) and groups["fc_norm.weight"] == (1.0, 0.0)
    assert groups["blocks.3.attn.qkv.weight"] == (0.5, 0.05) and groups["blocks.0.mlp.fc1.bias"] == (0.5 ** 4, 0.0)
    assert groups["patch_embed.proj.weight"] == (0.5 ** 5, 0.05)
    assert groups["pos_embed"] == groups["cls_token"] == (0.5 ** 5, 0.0)


def test_lars_adapts_the_weights_and_not_the_biases():
    grid = HeadGrid(8, 3, 2)
    optimizer = lars(grid, [0.1, 1.0], momentum=0.9, weight_decay=0.0)
    assert [(g["lr"], g["always_adapt"], len(g["params"][0].shape)) for g in optimizer.param_groups] == \
           [(0.1, True, 2), (0.1, False, 1), (1.0, True, 2), (1.0, False, 1)]
    assert grid(torch.randn(5, 8)).shape == (2, 5, 3)
    assert torch.allclose(grid.heads[0][1].weight.std(), torch.tensor(0.01), rtol=0.5)


def _boxes(crop: type[transforms.RandomResizedCrop], width: int, height: int, count: int,
           scale=(0.08, 1.0)) -> list[tuple[int, int, int, int]]:
    """``count`` boxes ``(top, left, height, width)`` the crop draws on a ``width`` x ``height`` image (seed 0)."""
    image = Image.new("RGB", (width, height))
    torch.manual_seed(0)
    return [crop.get_params(image, scale, (3 / 4, 4 / 3)) for _ in range(count)]


def _mean_area(boxes, width: int, height: int) -> float:
    """The boxes' mean area as a fraction of the image's."""
    return sum(h * w for _, _, h, w in boxes) / len(boxes) / (width * height)


def test_linprobe_crop_draws_once_as_mae_does():
    """MAE's linear-probe crop keeps the one box it draws (clipped to the image): larger boxes on average than
    torchvision's, which draws again until a box fits unclipped and else takes the centre."""
    assert _mean_area(_boxes(TFRandomResizedCrop, 500, 375, 4000), 500, 375) == pytest.approx(0.52, abs=0.015)
    assert _mean_area(_boxes(transforms.RandomResizedCrop, 500, 375, 4000), 500, 375) == pytest.approx(0.44, abs=0.015)
    # where no box needs clipping, the area is uniform in the scale and the log aspect ratio symmetric
    boxes = _boxes(TFRandomResizedCrop, 1000, 1000, 4000, scale=(0.2, 0.5))
    assert _mean_area(boxes, 1000, 1000) == pytest.approx(0.35, abs=0.005)
    assert sum(math.log(w / h) for _, _, h, w in boxes) / len(boxes) == pytest.approx(0.0, abs=0.01)


@pytest.mark.parametrize("width, height", [(500, 375), (375, 500), (28, 28), (1000, 20), (3, 400), (1, 1)])
def test_linprobe_crop_boxes_lie_inside_the_image(width, height):
    for top, left, h, w in _boxes(TFRandomResizedCrop, width, height, 500):
        assert 1 <= h and 0 <= top and top + h <= height and 1 <= w and 0 <= left and left + w <= width


def test_full_linear_probe_trains_on_mae_crops():
    crop = train_transform(LinprobeConfig(checkpoint="c.pth"), 32).transforms[0]
    assert type(crop) is TFRandomResizedCrop and crop.size == (32, 32)
    assert (crop.scale, crop.interpolation) == ((0.08, 1.0), InterpolationMode.BICUBIC)
    assert crop(Image.new("L", (500, 375))).size == (32, 32)


def _resolve(cls, argv):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, cls)
    return resolve_config(cls, parser.parse_args(argv))


def test_imagenet_presets_follow_mae():
    base = _resolve(FinetuneConfig, ["--checkpoint", "c.pth", "--preset", "imagenet-vit-b"])
    assert (base.blr, base.layer_decay, base.drop_path, base.epochs, base.warmup_epochs, base.effective_batch) == \
           (5e-4, 0.65, 0.1, 100, 5, 1024)
    assert (base.mixup, base.cutmix, base.smoothing, base.reprob, base.auto_augment, base.weight_decay) == \
           (0.8, 1.0, 0.1, 0.25, "rand-m9-mstd0.5-inc1", 0.05)
    assert (base.img_size, base.crop_ratio, base.global_pool, base.eval_name) == (224, 224 / 256, "avg",
                                                                                 "ImageNet-1K val")
    large = _resolve(FinetuneConfig, ["--checkpoint", "c.pth", "--preset", "imagenet-vit-l", "--epochs", "30"])
    assert (large.blr, large.layer_decay, large.drop_path, large.epochs) == (1e-3, 0.75, 0.2, 30)
    probe = _resolve(LinprobeConfig, ["--checkpoint", "c.pth", "--preset", "imagenet-vit-b"])
    assert (probe.blrs, probe.effective_batch, probe.epochs, probe.warmup_epochs, probe.weight_decay, probe.fast,
            probe.global_pool) == ((0.1,), 16384, 90, 10, 0.0, False, "token")
    assert Path(probe.checkpoint).is_absolute()


def test_knn_on_class_folders_with_an_rgb_timm_checkpoint(tmp_path):
    """ImageNet's layout (DATA/train, DATA/val class folders) and a plain timm state dict of an RGB ViT."""
    for split in ("train", "val"):
        for label, colour in enumerate(((255, 0, 0), (0, 0, 255))):
            folder = tmp_path / "data" / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (40, 40), tuple(c // (i + 1) for c in colour)).save(folder / f"{i}.png")
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=192, depth=2, num_heads=3, num_classes=0)
    torch.save(vit.state_dict(), tmp_path / "vit.pth")
    cfg = KnnConfig(checkpoint=str(tmp_path / "vit.pth"), dataset="imagefolder", data=str(tmp_path / "data"),
                    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_ratio=0.875, eval_name="colours val", ks=(3,),
                    output_dir=str(tmp_path / "out"), threads=1, num_workers=0)
    (record,) = run_knn(cfg)
    assert (record.arch, record.dataset, record.method, record.pretrain_epochs) == \
           ("vit_p8_d192_l2", "colours val", "mae", -1)
    assert record.value == 100.0  # red and blue are told apart by any features
    assert record.extra["selected_on"] == f"{tmp_path / 'data' / 'train'}: last 0.01 of each class"
    assert (record.extra["train_images"], record.extra["val_images"], record.extra["test_images"]) == (6, 2, 8)
