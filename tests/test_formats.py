"""Any MIM checkpoint in, as the field writes it: each format is detected, mapped to official MAE key names and
gives the source model's own features; each evaluates, exports and re-exports."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from timm.models.vision_transformer import VisionTransformer
from transformers import ViTConfig, ViTForImageClassification, ViTMAEConfig, ViTMAEForPreTraining, ViTModel

from emae.checkpoint import load_mae_state, read_weights
from emae.cli import main as cli_main
from emae.errors import EmaeError
from emae.export import export_checkpoint
from emae.formats import FORMATS
from emae.models import MaskedAutoencoderViT, build_model
from emae.records import read_records
from evaluation.backbone import load_backbone

ARCH = "vit_tiny_p8_fmnist"  # registered: patch 8, 128-d, 4 blocks, 4 heads; 16 tokens at 32 px
# Hugging Face models of 16-d heads, so that the usual 64-d (32-d for the decoder) would be wrong
HF_SHAPE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32,
                patch_size=8, num_channels=1)
HF_DECODER = dict(decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                  decoder_intermediate_size=64)
TOL = 1e-5


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(4, 1, 32, 32)


def timm_features(path, images: torch.Tensor, **read) -> torch.Tensor:
    """(B, 1 + N, D) tokens of the timm ViT that ``evaluation.backbone`` builds from ``path``, its LayerNorms of
    the epsilon the weights carry."""
    model, _, weights = load_backbone(path, **read)
    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.eps = weights.info.norm_eps
    with torch.no_grad():
        return model.eval().forward_features(images)


def mae_encoder(weights) -> MaskedAutoencoderViT:
    """Our MaskedAutoencoderViT of the weights' shape (decoder included), loaded strictly."""
    model = MaskedAutoencoderViT(**weights.shape.model_kwargs()).eval()
    assert load_mae_state(model, weights.state, weights.path) == []
    return model


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and (a - b).abs().max().item() < TOL


# ---------------------------------------------------------------- the sources, each written as its tool writes it


@pytest.fixture(scope="module")
def mae(tmp_path_factory):
    """(model, path): an MAE saved the way official MAE's main_pretrain.py saves it (misc.save_model)."""
    torch.manual_seed(0)
    model = build_model(ARCH, 32, 1).eval()
    optimizer = torch.optim.AdamW(model.parameters())
    model.forward_features(torch.randn(2, 1, 32, 32)).mean().backward()
    optimizer.step()
    args = argparse.Namespace(batch_size=64, epochs=400, accum_iter=1, model=f"mae_{ARCH}", input_size=32,
                              mask_ratio=0.75, norm_pix_loss=True, weight_decay=0.05, lr=2.5e-4, blr=1e-3, min_lr=0.0,
                              warmup_epochs=40, data_path="/datasets01/imagenet_full_size/061417/",
                              output_dir="./output_dir", log_dir="./output_dir", device="cuda", seed=0, resume="",
                              start_epoch=0, num_workers=10, pin_mem=True, world_size=1, local_rank=-1,
                              dist_on_itp=False, dist_url="env://", distributed=False)
    path = tmp_path_factory.mktemp("mae") / "checkpoint-3.pth"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3,
                "scaler": torch.amp.GradScaler("cpu").state_dict(), "args": args}, path)
    return model, path


@pytest.fixture(scope="module")
def pt_safetensors(tmp_path_factory, mae):
    """(model, path): the MAE's encoder saved by safetensors with transformers' and timm's metadata."""
    model, _ = mae
    path = tmp_path_factory.mktemp("st") / "encoder.safetensors"
    encoder = {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith(("decoder", "mask"))}
    save_file(encoder, str(path), metadata={"format": "pt"})
    return model, path


@pytest.fixture(scope="module")
def hf_mae(tmp_path_factory):
    """(model, folder): a ViTMAEForPreTraining written by transformers itself (save_pretrained)."""
    torch.manual_seed(0)
    model = ViTMAEForPreTraining(ViTMAEConfig(**HF_SHAPE, **HF_DECODER)).eval()
    folder = tmp_path_factory.mktemp("hf") / "vit-mae-tiny"
    model.save_pretrained(folder)
    return model, folder


@pytest.fixture(scope="module")
def hf_vit(tmp_path_factory):
    """(model, folder): a ViTModel (no "vit." prefix, a pooler) of LayerNorm epsilon 0.1, saved by transformers:
    with that epsilon, features match only if it is carried."""
    torch.manual_seed(0)
    model = ViTModel(ViTConfig(**HF_SHAPE, layer_norm_eps=0.1)).eval()
    folder = tmp_path_factory.mktemp("hf") / "vit-tiny"
    model.save_pretrained(folder)
    return model, folder


@pytest.fixture(scope="module")
def timm_vit(tmp_path_factory):
    """(model, folder): a fine-tuned timm ViT (global pooling, fc_norm, a 10-way head) as pytorch_model.bin, of
    64-d heads, which a timm file does not state either."""
    torch.manual_seed(0)
    model = VisionTransformer(img_size=32, patch_size=8, in_chans=1, embed_dim=128, depth=2, num_heads=2,
                              num_classes=10, global_pool="avg", fc_norm=True).eval()
    folder = tmp_path_factory.mktemp("timm") / "vit-timm"
    folder.mkdir()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps({"architecture": "vit_tiny_patch16_224", "num_classes": 10}))
    return model, folder


@pytest.fixture(scope="module")
def sources(mae, pt_safetensors, hf_mae, hf_vit, timm_vit) -> dict[str, Path]:
    """One checkpoint of each format, by a name for the test ids (Hugging Face ones as save_pretrained folders)."""
    return {"mae-pretrain": mae[1], "safetensors-pt": pt_safetensors[1], "hf-vit-mae": hf_mae[1], "hf-vit": hf_vit[1],
            "timm-bin": timm_vit[1] / "pytorch_model.bin"}


# ---------------------------------------------------------------- official MAE, safetensors metadata


def test_an_official_mae_training_checkpoint_gives_its_config_and_features(mae, images):
    model, path = mae
    weights = read_weights(path)
    assert weights.format == "mae-pretrain" and weights.arch == ARCH and weights.info.num_heads == 4
    assert weights.config == {"method": "mae", "arch": ARCH, "epochs": 4, "img_size": 32, "mask_ratio": 0.75,
                              "norm_pix_loss": True, "data": "/datasets01/imagenet_full_size/061417/",
                              "batch_size": 64, "blr": 1e-3, "lr": 2.5e-4, "min_lr": 0.0, "weight_decay": 0.05,
                              "warmup_epochs": 40, "seed": 0}
    with torch.no_grad():
        assert close(timm_features(path, images), model.forward_features(images))


def test_an_unregistered_official_mae_is_named_by_its_shape(tmp_path):
    model = MaskedAutoencoderViT(32, 8, 1, 64, 2, 4, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
    torch.save({"model": model.state_dict(), "args": argparse.Namespace(model="mae_vit_pico", epochs=20)},
               tmp_path / "pico.pth")
    weights = read_weights(tmp_path / "pico.pth", num_heads=4)
    assert weights.arch == weights.config["arch"] == "vit_p8_d64_l2" and weights.info.num_heads == 4
    assert weights.config["epochs"] == 20 and weights.config["method"] == "mae"  # no 'epoch': args.epochs


def test_safetensors_with_text_metadata_reads_as_a_state_dict(pt_safetensors, images):
    model, path = pt_safetensors
    weights = read_weights(path)
    assert weights.format == "mae" and weights.arch == ARCH and weights.config is None
    with torch.no_grad():
        assert close(timm_features(path, images), model.forward_features(images))


# ---------------------------------------------------------------- Hugging Face


def hf_layout(model, folder: Path, layout: str, tmp_path: Path) -> Path:
    """The checkpoint path of ``model`` (saved in ``folder``) as a layout of the field: transformers 5.x's folder
    or its weights file, 4.x's file (decoder layers under decoder_layers), 5.x's module names (torch.save of the
    state dict) beside its config.json."""
    if layout == "folder":
        return folder
    if layout == "file":
        return folder / "model.safetensors"
    out = tmp_path / layout
    model.config.save_pretrained(out)
    if layout == "4.x-file":
        state = load_file(str(folder / "model.safetensors"))
        state = {k.replace("decoder.decoder_encoder.layer.", "decoder.decoder_layers."): v for k, v in state.items()}
    else:
        state = model.state_dict()
    torch.save(state, out / "pytorch_model.bin")
    return out / "pytorch_model.bin"


@pytest.mark.parametrize("layout", ["folder", "file", "4.x-file", "5.x-modules"])
def test_a_hugging_face_vit_mae_gives_transformers_own_features(hf_mae, images, layout, tmp_path):
    """The encoder on every patch in order (mask ratio 0 and increasing noise: ViTMAE keeps the patches the noise
    sorts first) against ViTMAEModel's last_hidden_state; heads and epsilon from config.json."""
    model, folder = hf_mae
    path = hf_layout(model, folder, layout, tmp_path)
    weights = read_weights(path)
    assert weights.format == "hf-vit" and weights.arch == "vit_p8_d64_l2"
    assert (weights.info.num_heads, weights.shape.decoder.num_heads, weights.info.norm_eps) == (4, 2, 1e-12)
    model.config.mask_ratio = 0.0
    with torch.no_grad():
        theirs = model.vit(images, noise=torch.arange(16.0).expand(len(images), -1)).last_hidden_state
    model.config.mask_ratio = 0.75
    assert close(timm_features(path, images), theirs)
    assert close(mae_encoder(weights).forward_features(images), theirs)


def test_a_hugging_face_vit_mae_decoder_predicts_as_transformers_does(hf_mae, images):
    """The whole MAE on the same 25 % of patches (the ones a fixed noise keeps) against ViTMAEForPreTraining."""
    model, folder = hf_mae
    torch.manual_seed(2)
    noise = torch.rand(len(images), 16)
    with torch.no_grad():
        theirs = model(images, noise=noise).logits
        ours = mae_encoder(read_weights(folder))
        ids_keep = torch.argsort(noise, dim=1)[:, None, :4]
        predicted = ours.forward_decoder(ours.forward_encoder(images, ids_keep), ids_keep)[:, 0]
    assert close(predicted, theirs)


@pytest.mark.parametrize("kind", ["ViTModel", "ViTForImageClassification"])
def test_a_hugging_face_vit_gives_its_own_features(hf_vit, images, kind, tmp_path):
    model, folder = hf_vit
    if kind == "ViTForImageClassification":  # the task model: a "vit." prefix and a classifier
        torch.manual_seed(0)
        model = ViTForImageClassification(ViTConfig(**HF_SHAPE, layer_norm_eps=0.1, num_labels=3)).eval()
        folder = tmp_path / "classifier"
        model.save_pretrained(folder)
    weights = read_weights(folder)
    assert weights.format == "hf-vit" and weights.info.norm_eps == 0.1 and weights.info.num_heads == 4
    assert set(weights.dropped) == ({"head.weight", "head.bias"} if kind == "ViTForImageClassification" else
                                    {"pooler.dense.weight", "pooler.dense.bias"})
    with torch.no_grad():
        theirs = (model.vit if kind == "ViTForImageClassification" else model)(images).last_hidden_state
    assert close(timm_features(folder, images), theirs)


def test_a_config_json_that_does_not_fit_its_weights_is_an_error(hf_vit, tmp_path):
    _, folder = hf_vit
    (tmp_path / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    config = json.loads((folder / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(config, num_hidden_layers=3)))
    with pytest.raises(EmaeError, match=rf"width 64, depth 2, input channels 1, which does not fit "
                                        rf"{tmp_path / 'config.json'} \(depth 3\)"):
        read_weights(tmp_path)


# ---------------------------------------------------------------- timm


def test_a_fine_tuned_timm_vit_reads_from_its_hub_files(timm_vit, images):
    model, folder = timm_vit
    weights = read_weights(folder)  # pytorch_model.bin; timm's config.json is not a Hugging Face ViT's
    assert weights.format == "mae" and weights.arch == "vit_p8_d128_l2" and weights.info.num_heads == 2
    assert set(weights.dropped) == {"head.weight", "head.bias"} and "fc_norm.weight" in weights.encoder
    with torch.no_grad():
        theirs = model.forward_features(images)
    assert close(timm_features(folder, images, global_pool="avg", num_classes=10), theirs)


# ---------------------------------------------------------------- every format evaluates, exports, re-exports


@pytest.mark.fmnist
@pytest.mark.parametrize("name", ["mae-pretrain", "safetensors-pt", "hf-vit-mae", "hf-vit", "timm-bin"])
def test_knn_runs_on_every_format(sources, name, tmp_path):
    assert cli_main(["eval", "knn", "--checkpoint", str(sources[name]), "--train-limit", "200", "--val-limit",
                     "100", "--shots", "1", "--num-workers", "0", "--output-dir", str(tmp_path)]) == 0
    record = read_records(tmp_path)[0]
    if name == "mae-pretrain":  # the official args give the records their method, arch and epochs
        assert (record.method, record.arch, record.pretrain_epochs) == ("mae", ARCH, 4)
    else:
        assert record.method == "mae" and record.pretrain_epochs == -1


@pytest.mark.parametrize("target", ["timm", "detectron2", "mmseg"])
@pytest.mark.parametrize("name", ["mae-pretrain", "safetensors-pt", "hf-vit-mae", "hf-vit", "timm-bin"])
def test_every_format_exports_to_every_target(sources, name, target, tmp_path):
    out = export_checkpoint(sources[name], tmp_path / "out.pth", target)
    saved = torch.load(out, weights_only=True)
    keys = set(saved if target == "timm" else saved["model" if target == "detectron2" else "state_dict"])
    left_out = ("head.", "pooler.", "decoder_", "mask_token") + (("fc_norm.",) if target != "timm" else ())
    assert not any(k.removeprefix("backbone.net.").startswith(left_out) for k in keys)
    if target == "detectron2":
        assert all(k.startswith("backbone.net.") for k in keys) and "backbone.net.cls_token" not in keys
    if target != "timm":
        assert saved["encoder"]["num_heads"] == read_weights(sources[name]).info.num_heads


def test_our_timm_exports_export_again_with_their_heads(hf_mae, tmp_path):
    """The .safetensors export carries heads and epsilon; the bare .pth takes --num-heads."""
    _, folder = hf_mae
    assert cli_main(["export", "--checkpoint", str(folder), "--to", "timm", "--out", str(tmp_path / "a.pth")]) == 0
    assert cli_main(["export", "--checkpoint", str(folder), "--to", "timm", "--out",
                     str(tmp_path / "a.safetensors")]) == 0
    again = read_weights(tmp_path / "a.safetensors")
    assert again.format == "emae-export" and (again.info.num_heads, again.info.norm_eps) == (4, 1e-12)
    assert cli_main(["export", "--checkpoint", str(tmp_path / "a.safetensors"), "--to", "detectron2", "--out",
                     str(tmp_path / "b.pth")]) == 0
    assert torch.load(tmp_path / "b.pth", weights_only=True)["encoder"]["num_heads"] == 4
    assert cli_main(["export", "--checkpoint", str(tmp_path / "a.pth"), "--num-heads", "4", "--to", "mmseg",
                     "--out", str(tmp_path / "c.pth")]) == 0
    assert torch.load(tmp_path / "c.pth", weights_only=True)["encoder"]["num_heads"] == 4


def test_our_own_pth_timm_export_exports_again(tiny_checkpoint, tmp_path):
    """A registered shape's heads come back without --num-heads."""
    export_checkpoint(tiny_checkpoint, tmp_path / "timm.pth", "timm")
    export_checkpoint(tmp_path / "timm.pth", tmp_path / "again.safetensors", "timm")
    again = read_weights(tmp_path / "again.safetensors")
    assert again.arch == "vit_tiny_fmnist" and again.info.num_heads == 4


# ---------------------------------------------------------------- what is not read


def test_a_file_of_none_of_the_formats_is_one_error_naming_it_and_the_formats(tmp_path, capsys):
    torch.save({"model": {"conv1.weight": torch.zeros(8, 3, 3, 3)}}, tmp_path / "cnn.pth")
    assert cli_main(["export", "--checkpoint", str(tmp_path / "cnn.pth"), "--to", "timm", "--out",
                     str(tmp_path / "x.pth")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {tmp_path / 'cnn.pth'}: not a ViT encoder")
    assert "none of the formats read" in err and all(text in err for text in FORMATS.values())


def test_a_detectron2_export_is_not_read_back_as_weights(mae, tmp_path):
    export_checkpoint(mae[1], tmp_path / "d2.safetensors", "detectron2")
    with pytest.raises(EmaeError, match="d2.safetensors: an emae export for detectron2"):
        read_weights(tmp_path / "d2.safetensors")


def test_a_folder_without_weights_is_an_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(EmaeError, match="a folder without model.safetensors or pytorch_model.bin"):
        read_weights(tmp_path)
