"""Reconstruction grids, the consistency metric and the reconstruction-quality metrics (Figures 1, 3, 4;
Tables XV, XVI)."""
import argparse
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from analysis.consistency import consistency_of
from analysis.loader import LoadedMAE, load_mae_model
from analysis.reconstruction import (FID_WEIGHTS, build_fid, build_lpips, classify, evaluate, load_classifier,
                                     lpips_distance, ssim)
from analysis.visualize import LABEL_WIDTH, TITLE_HEIGHT, VisualizeConfig, compose_grid, grid_size
from emae.checkpoint import save_checkpoint
from emae.errors import EmaeError
from emae.losses import patchify, pixel_targets
from emae.masking import random_masking
from emae.models import MaskedAutoencoderViT, build_model
from emae.reconstruct import (masked_inputs, pairwise_consistency, random_masks, reconstruct, seeded_masks,
                              unnormalize_predictions)
from emae.records import read_records
from emae.settings import CONFIG_FILE
from results.tables import build_tables, load_reference, records_frame

PATCH, CHANS, SIZE = 4, 1, 16  # a 4 x 4 grid of patches: N = 16, P = 16


def tiny_mae(seed=0, **kw) -> MaskedAutoencoderViT:
    torch.manual_seed(seed)
    args = dict(img_size=SIZE, patch_size=PATCH, in_chans=CHANS, embed_dim=32, depth=1, num_heads=2,
                decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)
    return MaskedAutoencoderViT(**{**args, **kw}).eval()


def loaded(model, norm_pix=True) -> LoadedMAE:
    return LoadedMAE(model, "tiny", SIZE, CHANS, norm_pix, (0.5,), (0.25,), None, "tiny.pth", "tiny")


class Oracle(nn.Module):
    """Predicts every patch's true norm-pix target under any mask: its prediction ignores the mask."""

    patch_size, in_chans, num_patches = PATCH, CHANS, (SIZE // PATCH) ** 2

    def forward(self, imgs, masks):
        return pixel_targets(imgs, PATCH, True).unsqueeze(1).expand(-1, masks.mask.shape[1], -1, -1)


class Constant(Oracle):
    """Predicts zeros for every patch of every image: consistent, and wrong."""

    def forward(self, imgs, masks):
        return torch.zeros_like(super().forward(imgs, masks))


def images(n=3, seed=0):
    return torch.randn(n, CHANS, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- grid


def test_grid_size_and_cell_placement():
    white, black = torch.ones(1, 8, 8), torch.zeros(1, 8, 8)
    rows = [[white, black, white], [black, white, black]]
    grid = compose_grid(rows, cell=10, pad=3, titles=["a", "b", "c"], labels=["x", "y"])
    assert grid.size == grid_size(2, 3, 10, 3, True, True) == (LABEL_WIDTH + 3 + 3 * 13, TITLE_HEIGHT + 3 + 2 * 13)
    px = np.asarray(grid)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            left, top = LABEL_WIDTH + 3 + c * 13, TITLE_HEIGHT + 3 + r * 13
            cell = px[top:top + 10, left:left + 10]
            assert (cell == (255 if img.max() > 0 else 0)).all(), (r, c)
    plain = compose_grid(rows, cell=10, pad=0)
    assert plain.size == (30, 20)
    assert (np.asarray(plain)[:10, 10:20] == 0).all() and (np.asarray(plain)[:10, :10] == 255).all()


def test_visualize_writes_one_row_per_image_and_checkpoint(tmp_path):
    from analysis.visualize import add_arguments, main

    model = build_model("vit_tiny_fmnist", 32, 1)
    config = {"arch": "vit_tiny_fmnist", "img_size": 32, "in_chans": 1, "norm_pix_loss": True, "mean": [0.286],
              "std": [0.353], "dataset": "images", "data": str(tmp_path), "method": "mae", "epochs": 1}
    save_checkpoint({"model": model.state_dict(), "config": config}, tmp_path / "mae.pth")
    save_checkpoint({"model": model.state_dict(), "config": dict(config, method="emae")}, tmp_path / "emae.pth")
    files = []
    for i in range(3):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (28, 28), dtype=np.uint8)).save(path)
        files.append(str(path))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "grid.png"
    argv = ["--checkpoint", str(tmp_path / "mae.pth"), str(tmp_path / "emae.pth"), "--images", *files, "--seeds",
            "0", "1", "--cell", "20", "--pad", "1", "--out", str(out)]
    assert main(parser.parse_args(argv)) == 0
    with Image.open(out) as img:
        # 3 images x 2 checkpoints rows; original + 2 seeds x (masked, reconstruction) columns
        assert img.size == grid_size(6, 5, 20, 1, True, True)
    assert main(parser.parse_args(argv + ["--no-titles"])) == 0
    with Image.open(out) as img:
        assert img.size == (1 + 5 * 21, 1 + 6 * 21)
    # the figure's settings beside it: the last run's, which --config reads back
    saved = VisualizeConfig.from_dict(json.loads((tmp_path / CONFIG_FILE).read_text()))
    assert saved == VisualizeConfig.resolve(parser.parse_args(argv + ["--no-titles"]))
    assert (saved.titles, saved.seeds, saved.images, saved.num_images) == (False, (0, 1), tuple(files), 4)


# ---------------------------------------------------------------- reconstruction


def test_oracle_reconstruction_is_the_image_and_visible_patches_are_pasted():
    imgs = images()
    masks = seeded_masks(3, 16, 0.75, [0, 1])
    recon = reconstruct(Oracle(), imgs, masks, norm_pix=True, stats="target")
    assert recon.shape == (3, 2, CHANS, SIZE, SIZE)
    assert torch.allclose(recon, imgs.unsqueeze(1).expand_as(recon), atol=1e-4)
    # a real model changes masked patches only
    recon = reconstruct(tiny_mae(), imgs, masks, norm_pix=True)
    changed = (patchify(recon.flatten(0, 1), PATCH) - patchify(imgs.repeat_interleave(2, 0), PATCH)).abs().amax(-1)
    masked = masks.mask.flatten(0, 1) > 0
    assert (changed[~masked] == 0).all() and (changed[masked] > 0).all()


def test_seeded_masks_are_reproducible_and_differ_between_seeds():
    a, b = seeded_masks(4, 16, 0.75, [0, 1]), seeded_masks(4, 16, 0.75, [0, 1])
    assert torch.equal(a.mask, b.mask) and a.mask.shape == (4, 2, 16)
    assert (a.mask.sum(-1) == 12).all()
    assert not torch.equal(a.mask[:, 0], a.mask[:, 1])


def test_visible_statistics_use_only_visible_patches():
    imgs = images(2)
    mask = random_masking(torch.rand(2, 16, generator=torch.Generator().manual_seed(3)), 0.75).mask
    pred = torch.zeros(2, 1, 16, PATCH * PATCH)
    out = unnormalize_predictions(pred, imgs, mask, PATCH, True, "visible")
    target = patchify(imgs, PATCH)
    for b in range(2):
        visible = target[b][mask[b, 0] == 0]
        assert torch.allclose(out[b, 0], visible.mean().expand(16, PATCH * PATCH), atol=1e-5)
    tampered = patchify(imgs, PATCH).clone()
    tampered[mask[:, 0] > 0] += 5.0  # changing masked pixels changes nothing
    from emae.losses import unpatchify

    again = unnormalize_predictions(pred, unpatchify(tampered, PATCH, CHANS, (4, 4)), mask, PATCH, True, "visible")
    assert torch.allclose(out, again, atol=1e-5)


def test_default_reconstruction_uses_nothing_of_the_masked_patches():
    imgs = images(2)
    masks = seeded_masks(2, 16, 0.75, [0])
    tampered = patchify(imgs, PATCH).clone()
    tampered[masks.mask[:, 0] > 0] = tampered[masks.mask[:, 0] > 0] * 3.0 + 1.0  # the masked patches only
    from emae.losses import unpatchify

    tampered = unpatchify(tampered, PATCH, CHANS, (4, 4))
    model = tiny_mae()
    assert torch.allclose(reconstruct(model, imgs, masks, norm_pix=True),
                          reconstruct(model, tampered, masks, norm_pix=True), atol=1e-5)
    # each masked patch's own statistics carry the masked pixels into the reconstruction
    leaked = reconstruct(model, tampered, masks, norm_pix=True, stats="target")
    assert not torch.allclose(reconstruct(model, imgs, masks, norm_pix=True, stats="target"), leaked, atol=1e-2)
    with pytest.raises(EmaeError, match="unknown un-normalisation statistics 'mean'"):
        reconstruct(model, imgs, masks, norm_pix=False, stats="mean")
    assert VisualizeConfig().unnorm == "visible"


def test_masked_inputs_fill_masked_patches():
    imgs = images(1)
    masks = seeded_masks(1, 16, 0.75, [5])
    shown = patchify(masked_inputs(imgs, masks.mask, PATCH, fill=7.0)[:, 0], PATCH)[0]
    m = masks.mask[0, 0] > 0
    assert (shown[m] == 7.0).all() and torch.equal(shown[~m], patchify(imgs, PATCH)[0][~m])


# ---------------------------------------------------------------- consistency


def test_pairwise_consistency_by_hand():
    # M = 3 masks, N = 2 patches, P = 2 values
    pred = torch.tensor([[[[0.0, 0.0], [1.0, 1.0]],
                          [[2.0, 4.0], [9.0, 9.0]],
                          [[1.0, 2.0], [5.0, 5.0]]]])
    mask = torch.tensor([[[1.0, 1.0], [1.0, 0.0], [1.0, 0.0]]])
    l1, var = pairwise_consistency(pred, mask)
    # patch 0 is masked in all three masks: pairs (0,1) 3, (0,2) 1.5, (1,2) 1.5; patch 1 only once
    assert torch.allclose(l1, torch.tensor([2.0]))
    # patch 0's values across masks: (0, 2, 1) var 1 and (0, 4, 2) var 4 -> 2.5
    assert torch.allclose(var, torch.tensor([2.5]))
    assert torch.isnan(pairwise_consistency(pred, torch.eye(3, 2).unsqueeze(0))[0]).all()


def test_consistency_is_zero_when_predictions_ignore_the_mask_and_positive_otherwise():
    data = torch.utils.data.TensorDataset(images(6), torch.zeros(6, dtype=torch.long))
    for space in ("pixel", "prediction"):
        oracle = consistency_of(loaded(Oracle()), data, masks=4, mask_ratio=0.75, seed=0, space=space, batch_size=4)
        assert oracle["pairwise_l1"] == pytest.approx(0.0, abs=1e-6)
        assert oracle["prediction_var"] == pytest.approx(0.0, abs=1e-9)
        assert oracle["images"] == 6
        real = consistency_of(loaded(tiny_mae()), data, masks=4, mask_ratio=0.75, seed=0, space=space, batch_size=4)
        assert real["pairwise_l1"] > 1e-3 and real["prediction_var"] > 1e-6
    # the same seed draws the same masks: the metric is reproducible, and batch-size independent
    again = consistency_of(loaded(tiny_mae()), data, masks=4, mask_ratio=0.75, seed=0, space="prediction",
                           batch_size=5)
    assert again == pytest.approx(real, rel=1e-5)
    other = consistency_of(loaded(tiny_mae()), data, masks=4, mask_ratio=0.75, seed=1, space="prediction")
    assert other["pairwise_l1"] != pytest.approx(real["pairwise_l1"], rel=1e-5)
    # a decoder that ignores the image is consistent too; the error and the spread of its predictions tell
    constant = consistency_of(loaded(Constant()), data, masks=4, mask_ratio=0.75, seed=0, space="prediction")
    assert constant["pairwise_l1"] == 0 and constant["prediction_spread"] == pytest.approx(0.0, abs=1e-9)
    assert constant["masked_l1"] > 0.5
    assert real["prediction_spread"] > 1e-3 and real["masked_l1"] > 0.1 and oracle["prediction_spread"] > 0.5
    assert oracle["masked_l1"] == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(EmaeError, match="at least 2 masks"):
        consistency_of(loaded(Oracle()), data, masks=1, mask_ratio=0.75, seed=0)


def test_random_masks_are_independent_per_mask():
    masks = random_masks(2, 5, 64, 0.75, torch.Generator().manual_seed(0))
    assert masks.mask.shape == (2, 5, 64) and masks.ids_keep[0].shape == (2, 5, 16)
    assert len({tuple(m.tolist()) for m in masks.mask.flatten(0, 1)}) == 10


# ---------------------------------------------------------------- loading checkpoints


def test_load_official_layout_checkpoint_infers_the_shape(tmp_path):
    model = tiny_mae(embed_dim=64, depth=2, num_heads=1, decoder_embed_dim=32, decoder_depth=3, decoder_num_heads=1)
    save_checkpoint({"model": model.state_dict()}, tmp_path / "full.pth")
    got = load_mae_model(tmp_path / "full.pth", num_heads=1, decoder_num_heads=1, mean=[0.5], std=[0.25])
    assert (got.img_size, got.in_chans, got.norm_pix, got.config) == (SIZE, CHANS, True, None)
    assert len(got.model.blocks) == 2 and len(got.model.decoder_blocks) == 3
    imgs, masks = images(2), seeded_masks(2, 16, 0.75, [0])
    assert torch.equal(got.model(imgs, masks), model(imgs, masks))
    # the default heads are 64-d (encoder) and 32-d (decoder)
    assert load_mae_model(tmp_path / "full.pth").model.blocks[0].attn.num_heads == 1
    encoder_only = {k: v for k, v in model.state_dict().items() if not k.startswith(("decoder_", "mask_token"))}
    save_checkpoint({"model": encoder_only}, tmp_path / "encoder.pth")
    with pytest.raises(EmaeError, match="no decoder"):
        load_mae_model(tmp_path / "encoder.pth")


# ---------------------------------------------------------------- Table XVI metrics


def test_ssim_of_an_image_with_itself_is_one():
    imgs = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ssim(imgs, imgs), torch.ones(3), atol=1e-6)
    noisy = (imgs + 0.2 * torch.randn(imgs.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert (ssim(noisy, imgs) < 0.9).all()


def test_missing_weights_give_a_clear_error(tmp_path):
    with pytest.raises(EmaeError, match=r"LPIPS needs the ImageNet weights of torchvision's alexnet "
                                        r"\(alexnet-owt-7be5be79\.pth\).*--lpips-weights"):
        build_lpips(None)
    with pytest.raises(EmaeError, match=r"not found; LPIPS needs .*vgg16"):
        build_lpips(tmp_path / "absent.pth", net="vgg")
    with pytest.raises(EmaeError, match=rf"FID needs torch-fidelity's InceptionV3 FID weights \({FID_WEIGHTS}\)"
                                        r".*--fid-weights"):
        build_fid(None)
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(EmaeError, match="not torchvision's alexnet weights"):
        build_lpips(tmp_path / "wrong.pth")


def test_lpips_with_weights_built_here(tmp_path):
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), tmp_path / "alexnet.pth")
    lpips = build_lpips(tmp_path / "alexnet.pth", image_size=32)
    a = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    b = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(lpips_distance(lpips, a, a), torch.zeros(2), atol=1e-6)
    assert (lpips_distance(lpips, a, b) > 0).all()


def inception_weights(path):
    """torch-fidelity's InceptionV3 with random weights, saved as its weights file would be."""
    fe = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    cls = fe.FeatureExtractorInceptionV3
    original = cls.load_state_dict
    cls.load_state_dict = lambda self, state, *a, **k: None  # let the constructor run without weights
    try:
        fe_url = fe.load_state_dict_from_url
        fe.load_state_dict_from_url = lambda *a, **k: {}
        torch.manual_seed(0)
        net = cls("inception-v3-compat", ["2048"])
    finally:
        cls.load_state_dict = original
        fe.load_state_dict_from_url = fe_url
    for m in net.modules():  # He initialisation keeps the random features from fading to zero with depth
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    torch.save(net.state_dict(), path)


def test_fid_with_weights_built_here(tmp_path):
    inception_weights(tmp_path / FID_WEIGHTS)
    fid = build_fid(tmp_path / FID_WEIGHTS, features=64)  # the 2048-d matrix square root takes minutes here
    real = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    fid.update(real.expand(-1, 3, -1, -1), real=True)
    fid.update(real.expand(-1, 3, -1, -1), real=False)
    assert float(fid.compute()) == pytest.approx(0.0, abs=1e-2)
    fid.reset()
    fid.update(real.expand(-1, 3, -1, -1), real=True)
    fid.update((1 - real).expand(-1, 3, -1, -1) ** 3, real=False)
    assert float(fid.compute()) > 1e-3


# ---------------------------------------------------------------- Table XV classification


def test_classifier_from_a_vit_checkpoint_and_top1_on_reconstructions(tmp_path):
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    net = VisionTransformer(img_size=SIZE, patch_size=PATCH, in_chans=1, num_classes=3, embed_dim=64, depth=1,
                            num_heads=1, global_pool="avg", fc_norm=True).eval()
    save_checkpoint({"model": net.state_dict()}, tmp_path / "cls.pth")
    got, size, _ = load_classifier(tmp_path / "cls.pth")
    x = torch.rand(4, 1, SIZE, SIZE)
    assert size == SIZE and torch.equal(got(x), net(x))
    # emae eval finetune's layout: the ViT's constructor arguments beside the weights and its config
    vit = dict(img_size=SIZE, patch_size=PATCH, in_chans=1, num_classes=3, embed_dim=64, depth=1, num_heads=4,
               global_pool="avg")
    torch.manual_seed(1)
    four_heads = VisionTransformer(**vit).eval()
    save_checkpoint({"model": four_heads.state_dict(), "vit": vit, "config": {"mean": [0.5], "std": [0.25]}},
                    tmp_path / "ft.pth")
    got, size, config = load_classifier(tmp_path / "ft.pth")
    assert got.blocks[0].attn.num_heads == 4 and torch.equal(got(x), four_heads(x)) and config["mean"] == [0.5]
    # an oracle MAE given each masked patch's own statistics reconstructs the image, so the classifier agrees
    # on originals and reconstructions
    imgs = images(8)
    labels = classify(net, ((imgs * 0.25 + 0.5).clamp(0, 1)), (0.5,), (0.25,), SIZE)
    data = torch.utils.data.TensorDataset(imgs, labels)
    result = evaluate(loaded(Oracle()), data, ["ssim"], stats="target", classifier=(net, SIZE, (0.5,), (0.25,)),
                      batch_size=3)
    assert result["top1_original"] == 100.0 and result["top1"] == pytest.approx(100.0)
    assert result["ssim"] == pytest.approx(1.0, abs=1e-3) and result["images"] == 8
    # by default (the visible patches' statistics) the same oracle is not perfect: that 1.0 was the leak's
    honest = evaluate(loaded(Oracle()), data, ["ssim"], batch_size=3)
    assert honest == evaluate(loaded(Oracle()), data, ["ssim"], stats="visible", batch_size=3)
    assert honest["ssim"] < result["ssim"] - 0.02
    noisy = evaluate(loaded(tiny_mae()), data, ["ssim"], classifier=(net, SIZE, (0.5,), (0.25,)))
    assert noisy["ssim"] < 0.99 and noisy["top1_original"] == 100.0


# ---------------------------------------------------------------- commands and records


def test_commands_write_records_the_report_reads(tmp_path):
    from analysis import consistency, reconstruction

    model = build_model("vit_tiny_fmnist", 32, 1)
    base = {"arch": "vit_tiny_fmnist", "img_size": 32, "in_chans": 1, "norm_pix_loss": True, "mean": [0.286],
            "std": [0.353], "dataset": "fashion-mnist", "data": "/data/fashion-mnist", "epochs": 3, "parts": 4,
            "mask_ratio": 0.75}
    for method in ("mae", "emae"):
        save_checkpoint({"model": model.state_dict(), "config": dict(base, method=method)}, tmp_path / f"{method}.pth")
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (32, 32), dtype=np.uint8)).save(folder / f"{i}.png")
    common = ["--checkpoint", str(tmp_path / "mae.pth"), str(tmp_path / "emae.pth"), "--dataset", "images",
              "--data", str(folder), "--dataset-name", "probe", "--output-dir", str(tmp_path / "out")]
    for module, cls, extra in ((consistency, consistency.ConsistencyConfig, ["--masks", "3"]),
                               (reconstruction, reconstruction.ReconstructionConfig, [])):
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        args = parser.parse_args(common + extra)
        assert module.main(args) == 0
        # config.json beside the records: the run's config, which --config reads back into the same
        saved = tmp_path / "out" / CONFIG_FILE
        assert cls.from_dict(json.loads(saved.read_text())) == cls.resolve(args)
        assert cls.resolve(parser.parse_args(["--config", str(saved)])) == cls.resolve(args)
    records = read_records(tmp_path / "out" / "records.jsonl")
    got = {(r.method, r.protocol, r.metric) for r in records}
    assert got == {(m, p, k) for m in ("mae", "emae") for p, k in
                   [("consistency", k) for k in ("pairwise_l1", "prediction_var", "masked_l1", "prediction_spread")]
                   + [("reconstruction", "ssim")]}
    assert {(r.pretrain_epochs, r.pretrain_data, r.dataset) for r in records} == {(3, "fashion-mnist", "probe")}
    assert all(r.config["eval"]["checkpoint"].endswith(f"{r.method}.pth") for r in records)
    ssim_rec = next(r for r in records if r.metric == "ssim")
    assert 0 < ssim_rec.value <= 1 and json.loads(ssim_rec.to_json())["extra"]["eval_mask_ratio"] == 0.75
    assert {r.extra["unnorm"] for r in records} == {"visible", "target"}  # reconstruction's default; consistency's
    assert {r.extra["unnorm"] for r in records if r.protocol == "consistency"} == {"target"}
    table = next(t for t in build_tables(load_reference(), records_frame(records)) if t.spec.name == "XVI")
    ours = table.frame[table.frame["Source"] == "ours"]
    assert len(ours) == 2 and all(label.endswith("visible patches' statistics)") for label in ours["Method"])


def analysis_parser(module) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser


def test_config_file_supplies_values_and_explicit_flags_override_them(tmp_path):
    from analysis import consistency, reconstruction, visualize

    (tmp_path / "consistency.yaml").write_text("checkpoint: [a.pth, b.pth]\nnames: [MAE, EMAE]\nmasks: 5\n"
                                               "seed: 2\nmean: [0.5]\noutput_dir: runs/a\n")
    cfg = consistency.ConsistencyConfig.resolve(analysis_parser(consistency).parse_args(
        ["--config", str(tmp_path / "consistency.yaml"), "--masks", "3", "--output-dir", "runs/b"]))
    assert (cfg.checkpoint, cfg.names, cfg.seed, cfg.mean) == (("a.pth", "b.pth"), ("MAE", "EMAE"), 2, (0.5,))
    assert (cfg.masks, cfg.output_dir) == (3, "runs/b")  # the flags win
    assert (cfg.num_images, cfg.space, cfg.crop_ratio) == (1000, "pixel", None)  # neither: the defaults
    (tmp_path / "reconstruction.yaml").write_text("checkpoint: [a.pth]\noutput_dir: out\nmetrics: [ssim, fid]\n"
                                                  "fid_weights: inception.pth\nlpips_net: vgg\n")
    cfg = reconstruction.ReconstructionConfig.resolve(analysis_parser(reconstruction).parse_args(
        ["--config", str(tmp_path / "reconstruction.yaml"), "--metrics", "ssim"]))
    assert (cfg.chosen_metrics(), cfg.fid_weights, cfg.lpips_net) == (["ssim"], "inception.pth", "vgg")
    (tmp_path / "visualize.yaml").write_text("checkpoint: [a.pth]\nseeds: [4, 5]\ntitles: false\nout: f.png\n")
    cfg = VisualizeConfig.resolve(analysis_parser(visualize).parse_args(
        ["--config", str(tmp_path / "visualize.yaml"), "--titles", "--cell", "10"]))
    assert (cfg.seeds, cfg.titles, cfg.cell, cfg.out, cfg.num_images) == ((4, 5), True, 10, "f.png", 4)


def test_bad_settings_are_one_clear_error(tmp_path):
    from analysis import consistency, reconstruction, visualize

    commands = {"consistency": (consistency, consistency.ConsistencyConfig),
                "reconstruction": (reconstruction, reconstruction.ReconstructionConfig),
                "visualize": (visualize, VisualizeConfig)}
    typo = tmp_path / "typo.yaml"
    typo.write_text("checkpoint: [a.pth]\nmask: 3\n")
    cases = [
        ("consistency", "--checkpoint a.pth b.pth --names A --output-dir o", "--names has 1 labels (A) for 2 checkpoints"),
        ("consistency", "--output-dir o", "--checkpoint is required"),
        ("consistency", "--checkpoint a.pth", "--output-dir is required"),
        ("consistency", "--checkpoint a.pth --output-dir o --space latent",
         "space must be one of pixel, prediction, got 'latent'"),
        ("reconstruction", "--checkpoint a.pth --output-dir o --metrics ssim psnr",
         "metrics must be one of ssim, lpips, fid, got 'psnr'"),
        ("reconstruction", "--checkpoint a.pth --output-dir o --norm-pix yes",
         "norm_pix must be one of auto, true, false, got 'yes'"),
        ("visualize", "--checkpoint a.pth --dataset coco", "dataset must be one of fashion-mnist, "),
        ("visualize", "--checkpoint a.pth --cell 0", "--cell must be >= 1 and --pad >= 0, got cell=0"),
        ("visualize", f"--config {typo}", f"{typo}: unknown config key(s) ['mask']"),
    ]
    for command, argv, message in cases:
        module, cls = commands[command]
        with pytest.raises(EmaeError, match=re.escape(message)):
            cls.resolve(analysis_parser(module).parse_args(argv.split()))
