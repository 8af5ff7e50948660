"""``emae eval reconstruction``: the quality of reconstructions from 75 %-masked images (Tables XV and XVI).

Each image is masked once with MAE's random mask (``--mask-ratio``, masks drawn from a generator seeded with
``--seed``, identical for every checkpoint) and reconstructed with the visible patches pasted back;
norm-pix predictions are un-normalised by default with the statistics of the visible patches, which the model
sees (``--unnorm visible``); ``--unnorm target`` uses each masked patch's own statistics from the original, so
its similarities leak what the model never saw (see :mod:`emae.reconstruct`). Then, against the originals:

- Table XVI: SSIM (torchmetrics, Gaussian 11x11 window, sigma 1.5, data range [0, 1]; needs no weights),
  LPIPS (torchmetrics' LPIPS with its bundled linear layers over an AlexNet, VGG16 or SqueezeNet backbone,
  whose torchvision ImageNet weights are read from ``--lpips-weights``; images under 64 px are resized to
  64 px for it) and FID (torchmetrics' FrechetInceptionDistance over torch-fidelity's InceptionV3 2048-d
  pool features, weights from ``--fid-weights``). Grey images are repeated to three channels for LPIPS
  and FID. Network weights are never downloaded: a metric whose weights are not given fails with a message
  naming the file it needs.
- Table XV: the top-1 accuracy of a classifier (``--classifier``: a timm ViT checkpoint such as one written
  by ``emae eval finetune``, its shape read from the weights, or any timm model named by
  ``--classifier-model``) on the originals and on the reconstructions.

Writes one record per checkpoint and metric to ``OUTPUT_DIR/records.jsonl``: protocol ``reconstruction``
with metrics ``ssim``, ``lpips``, ``fid``; protocol ``reconstruction-classification`` with ``top1`` (on the
reconstructions) and ``top1_original``, each with the statistics used in ``extra["unnorm"]`` (the report names
them in the row); and the settings (:class:`ReconstructionConfig`) as ``OUTPUT_DIR/config.json``.
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from analysis.loader import (MASK_HELP, LoadedMAE, RecordedAnalysisConfig, add_config_arguments, batches, check_choice,
                             each_model, load_models, record_base, records_path, write_outputs)
from emae.checkpoint import load_checkpoint, model_state, read_vit_shape
from emae.errors import EmaeError
from emae.export import timm as timm_export
from emae.models import ARCHS
from emae.reconstruct import UNNORM_STATS, random_masks, reconstruct, to_unit_range
from emae.records import Record, provenance, sha256_file
from emae.settings import pick_device

METRICS = ("ssim", "lpips", "fid")
LPIPS_NETS = {"alex": ("alexnet", "alexnet-owt-7be5be79.pth"), "vgg": ("vgg16", "vgg16-397923af.pth"),
              "squeeze": ("squeezenet1_1", "squeezenet1_1-b8a52dc0.pth")}
FID_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"


@dataclass
class ReconstructionConfig(RecordedAnalysisConfig):
    """``emae eval reconstruction``'s settings: the masks, the metrics and their networks' weights (Table XVI),
    and the classifier of Table XV. ``None``: see each flag's help."""

    help_for = dict(RecordedAnalysisConfig.help_for, **MASK_HELP, **{
        "metrics": f"some of {', '.join(METRICS)} (default: ssim, plus lpips and fid where their weights are given)",
        "lpips_weights": "torchvision ImageNet weights of the LPIPS backbone, e.g. alexnet-owt-7be5be79.pth",
        "lpips_net": f"the LPIPS backbone, one of {', '.join(sorted(LPIPS_NETS))} (default alex)",
        "lpips_lin_weights": "LPIPS' linear layers (default: the copy torchmetrics ships)",
        "fid_weights": f"torch-fidelity's InceptionV3 weights ({FID_WEIGHTS})",
        "classifier": "Table XV: a timm classifier checkpoint",
        "classifier_model": "its timm model name (default: a ViT read from the checkpoint's weights)",
        "num_classes": "its classes (default: from its head)",
        "classifier_num_heads": "its attention heads (default: its config's architecture, else 64-d heads)",
        "classifier_mean": "its input normalisation (default: its config's, else the MAE's)",
        "classifier_std": "its input normalisation std (default: its config's, else the MAE's)",
    })
    metrics: tuple[str, ...] | None = None
    mask_ratio: float = 0.75
    seed: int = 0
    unnorm: str = "visible"  # visible, target (leaks the masked patches' statistics)
    lpips_weights: str | None = None
    lpips_net: str = "alex"  # alex, vgg, squeeze
    lpips_lin_weights: str | None = None
    fid_weights: str | None = None
    classifier: str | None = None
    classifier_model: str | None = None
    num_classes: int | None = None
    classifier_num_heads: int | None = None
    classifier_mean: tuple[float, ...] | None = None
    classifier_std: tuple[float, ...] | None = None

    def validate(self) -> "ReconstructionConfig":
        super().validate()
        for metric in self.metrics or ():
            check_choice("metrics", metric, METRICS)
        check_choice("unnorm", self.unnorm, UNNORM_STATS)
        check_choice("lpips_net", self.lpips_net, tuple(sorted(LPIPS_NETS)))
        return self

    def chosen_metrics(self) -> list[str]:
        """``metrics``, by default SSIM plus LPIPS and FID where their weights are given."""
        if self.metrics:
            return list(self.metrics)
        return ["ssim"] + (["lpips"] if self.lpips_weights else []) + (["fid"] if self.fid_weights else [])

    def eval_settings(self, classifier_sha256: str) -> dict:
        """The settings the records hold under ``config["eval"]``; ``classifier_sha256``: the classifier file's
        hash ("" without one)."""
        metrics = self.chosen_metrics()
        return dict(protocol="reconstruction", metrics=metrics, eval_mask_ratio=self.mask_ratio, seed=self.seed,
                    unnorm=self.unnorm, num_images=self.num_images, crop_ratio=self.crop_ratio,
                    lpips_net=self.lpips_net if "lpips" in metrics else None, classifier=self.classifier,
                    classifier_sha256=classifier_sha256, classifier_model=self.classifier_model)


# ---------------------------------------------------------------------------------------------------------
# metrics of image pairs; images (B, C, H, W) in [0, 1], C = 1 or 3


def ssim(preds: Tensor, target: Tensor) -> Tensor:
    """SSIM of each image pair: (B, C, H, W) x 2 in [0, 1] -> (B,)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure(preds.float(), target.float(), data_range=1.0, reduction="none")


def _rgb(imgs: Tensor) -> Tensor:
    return imgs.expand(-1, 3, -1, -1) if imgs.shape[1] == 1 else imgs


def _require_file(path: str | os.PathLike | None, what: str, needed: str, flag: str) -> Path:
    if not path:
        raise EmaeError(f"{what} needs {needed}, which cannot be downloaded here: pass its path with {flag}")
    if not Path(path).is_file():
        raise EmaeError(f"{path}: not found; {what} needs {needed} ({flag})")
    return Path(path)


def build_lpips(weights: str | os.PathLike | None, net: str = "alex", image_size: int = 64,
                lin_weights: str | os.PathLike | None = None) -> nn.Module:
    """torchmetrics' LPIPS network with its backbone's ImageNet weights read from a local torchvision file.

    Args:
        weights: torchvision's state dict of the backbone (e.g. ``alexnet-owt-7be5be79.pth``).
        net: ``alex``, ``vgg`` or ``squeeze``.
        image_size: the images' side; under 64 px they are resized to 64 px (LPIPS' smallest patches).
        lin_weights: LPIPS' linear layers (default: the copy torchmetrics ships).
    """
    if net not in LPIPS_NETS:
        raise EmaeError(f"unknown LPIPS network {net!r}; choose one of {sorted(LPIPS_NETS)}")
    tv_name, file_name = LPIPS_NETS[net]
    path = _require_file(weights, "LPIPS", f"the ImageNet weights of torchvision's {tv_name} ({file_name})",
                         "--lpips-weights")
    from torchmetrics.functional.image.lpips import _NoTrainLpips

    kwargs = dict(model_path=str(lin_weights)) if lin_weights else {}
    lpips = _NoTrainLpips(net=net, pretrained=True, pnet_rand=True, resize=64 if image_size < 64 else None, **kwargs)
    state = model_state(load_checkpoint(path), path)
    # the LPIPS backbone keeps torchvision's ``features`` layers, split into slices under their own indices
    mapped, expected = {}, set()
    for slice_name, block in lpips.net.named_children():
        for index, layer in block.named_children():
            for key in layer.state_dict():
                expected.add(f"{slice_name}.{index}.{key}")
                source = f"features.{index}.{key}"
                if source in state:
                    mapped[f"{slice_name}.{index}.{key}"] = state[source]
    missing = sorted(expected - set(mapped))
    if missing:
        raise EmaeError(f"{path}: not torchvision's {tv_name} weights: missing "
                        f"{[m.split('.', 1)[1] for m in missing[:4]]} (as features.N...)")
    try:
        lpips.net.load_state_dict(mapped, strict=True)
    except RuntimeError as e:
        raise EmaeError(f"{path}: does not fit torchvision's {tv_name}: {str(e).splitlines()[0]}") from None
    return lpips.eval()


@torch.no_grad()
def lpips_distance(lpips: nn.Module, preds: Tensor, target: Tensor) -> Tensor:
    """LPIPS of each image pair: (B, C, H, W) x 2 in [0, 1] -> (B,)."""
    return lpips(_rgb(preds).float(), _rgb(target).float(), normalize=True).flatten()


def build_fid(weights: str | os.PathLike | None, features: int = 2048):
    """torchmetrics' FrechetInceptionDistance (inputs in [0, 1]) with torch-fidelity's FID weights read from a
    local file. ``features``: the InceptionV3 layer, 2048 (the pool features of the standard FID), 768, 192
    or 64."""
    path = _require_file(weights, "FID", f"torch-fidelity's InceptionV3 FID weights ({FID_WEIGHTS})", "--fid-weights")
    from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

    if not _TORCH_FIDELITY_AVAILABLE:
        raise EmaeError("FID needs the Python package torch-fidelity (pip install torch-fidelity)")
    load_checkpoint(path)  # refuse a file holding more than tensors before torch-fidelity unpickles it
    from torchmetrics.image.fid import FrechetInceptionDistance

    try:
        return FrechetInceptionDistance(feature=features, normalize=True, feature_extractor_weights_path=str(path))
    except RuntimeError as e:
        raise EmaeError(f"{path}: not torch-fidelity's InceptionV3 weights: {str(e).splitlines()[0]}") from None


def fid_update(fid, preds: Tensor, target: Tensor) -> None:
    """Add a batch of reconstructions (fake) and originals (real), (B, C, H, W) in [0, 1]."""
    fid.update(_rgb(target).float(), real=True)
    fid.update(_rgb(preds).float(), real=False)


# ---------------------------------------------------------------------------------------------------------
# the classifier of Table XV


def load_classifier(path: str | os.PathLike, model_name: str | None = None, num_classes: int | None = None,
                    in_chans: int | None = None, num_heads: int | None = None) -> tuple[nn.Module, int, dict | None]:
    """A timm classifier from a checkpoint: (model in eval mode, its input size, its config if any).

    ``emae eval finetune``'s checkpoints name their ViT's constructor arguments (``vit``). Otherwise, without
    ``model_name``, the checkpoint must hold a timm ViT: its patch size, width, depth, classes and pooling
    (``fc_norm`` means global average pooling, as MAE's fine-tuning) are read from the weights, heads from
    ``num_heads``, the config's architecture or the usual 64-d heads.
    """
    import timm

    obj = load_checkpoint(path)
    state = model_state(obj, path)
    config = obj.get("config") if isinstance(obj.get("config"), dict) else None
    head = next((state[k] for k in ("head.weight", "fc.weight", "classifier.weight", "head.fc.weight")
                 if k in state and state[k].ndim == 2), None)
    num_classes = num_classes or (head.shape[0] if head is not None else None)
    if not num_classes:
        raise EmaeError(f"{path}: no classification head found (head.weight); pass --num-classes")
    if isinstance(obj.get("vit"), dict):  # emae eval finetune's checkpoint: the ViT's constructor arguments
        model = timm_export.build_vit(**obj["vit"])
        img_size = model.patch_embed.img_size[0]
    elif model_name:
        model = timm.create_model(model_name, pretrained=False, num_classes=num_classes,
                                  **({"in_chans": in_chans} if in_chans else {}))
        from timm.data import resolve_data_config

        img_size = resolve_data_config({}, model=model)["input_size"][-1]
    else:
        heads = num_heads
        if heads is None and config and config.get("arch") in ARCHS:
            heads = ARCHS[config["arch"]].num_heads
        info = read_vit_shape(state, path, heads).encoder
        pool = "avg" if "fc_norm.weight" in state else "token"
        model = timm_export.build_vit(img_size=info.img_size, patch_size=info.patch_size, in_chans=info.in_chans,
                                      num_classes=num_classes, embed_dim=info.embed_dim, depth=info.depth,
                                      num_heads=info.num_heads, global_pool=pool, fc_norm=pool == "avg",
                                      norm_eps=info.norm_eps)
        img_size = info.img_size
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise EmaeError(f"{path}: does not fit the classifier {model_name or 'ViT read from its weights'}: "
                        f"{' '.join(str(e).split())[:400]}") from None
    return model.eval(), img_size, config


@torch.no_grad()
def classify(classifier: nn.Module, imgs: Tensor, mean: Iterable[float], std: Iterable[float],
             img_size: int) -> Tensor:
    """Class predictions for images in [0, 1]: (B, C, H, W) -> (B,), resized (bicubic) to the classifier's
    input size and normalised with its mean and std."""
    if imgs.shape[-1] != img_size or imgs.shape[-2] != img_size:
        imgs = F.interpolate(imgs, size=(img_size, img_size), mode="bicubic", align_corners=False).clamp(0, 1)
    mean_t = torch.tensor(tuple(mean), device=imgs.device).view(1, -1, 1, 1)
    std_t = torch.tensor(tuple(std), device=imgs.device).view(1, -1, 1, 1)
    return classifier((imgs - mean_t) / std_t).argmax(dim=-1)


# ---------------------------------------------------------------------------------------------------------
# the evaluation loop


@torch.no_grad()
def evaluate(loaded: LoadedMAE, dataset, metrics: Iterable[str], mask_ratio: float = 0.75, seed: int = 0,
             stats: str = "visible", batch_size: int = 64, device: torch.device | str = "cpu",
             lpips: nn.Module | None = None, fid=None, classifier: tuple | None = None) -> dict:
    """Reconstruct every image once and measure. ``classifier``: (model, img_size, mean, std) or None.

    Returns the mean SSIM / LPIPS over images, the FID over the set, the classifier's top-1 (%) on the
    originals and on the reconstructions, each where asked, and ``images``.
    """
    metrics = set(metrics)
    model = loaded.model.to(device).eval()
    generator = torch.Generator().manual_seed(seed)
    sums = {"ssim": 0.0, "lpips": 0.0, "top1": 0, "top1_original": 0}
    count = 0
    if fid is not None:
        fid.reset()
        fid.to(device)
    for imgs, labels in batches(dataset, batch_size):
        imgs, labels = imgs.to(device), labels.to(device)
        masks = random_masks(imgs.shape[0], 1, model.num_patches, mask_ratio, generator, device)
        recon = to_unit_range(reconstruct(model, imgs, masks, loaded.norm_pix, stats)[:, 0], loaded.mean, loaded.std)
        orig = to_unit_range(imgs, loaded.mean, loaded.std)
        if "ssim" in metrics:
            sums["ssim"] += float(ssim(recon, orig).sum())
        if "lpips" in metrics:
            sums["lpips"] += float(lpips_distance(lpips.to(device), recon, orig).sum())
        if "fid" in metrics:
            fid_update(fid, recon, orig)
        if classifier is not None:
            net, size, mean, std = classifier
            sums["top1"] += int((classify(net.to(device), recon, mean, std, size) == labels).sum())
            sums["top1_original"] += int((classify(net, orig, mean, std, size) == labels).sum())
        count += imgs.shape[0]
    if count == 0:
        raise EmaeError("no images to evaluate")
    result: dict = {"images": count}
    for name in ("ssim", "lpips"):
        if name in metrics:
            result[name] = sums[name] / count
    if "fid" in metrics:
        if count < 2:
            raise EmaeError("FID needs at least 2 images")
        result["fid"] = float(fid.compute())
    if classifier is not None:
        result["top1"] = 100.0 * sums["top1"] / count
        result["top1_original"] = 100.0 * sums["top1_original"] / count
    return result


def table_xv_classifier(cfg: ReconstructionConfig, first: LoadedMAE) -> tuple[tuple | None, str]:
    """The config's classifier as :func:`evaluate` takes it, (model, input size, mean, std), and its file's
    SHA-256; (None, "") without one. Its normalisation defaults to its config's, else the MAE's."""
    if not cfg.classifier:
        return None, ""
    net, size, config = load_classifier(cfg.classifier, cfg.classifier_model, cfg.num_classes, first.in_chans,
                                        cfg.classifier_num_heads)
    mean = cfg.classifier_mean or (config or {}).get("mean") or first.mean
    std = cfg.classifier_std or (config or {}).get("std") or first.std
    return (net, size, tuple(mean), tuple(std)), sha256_file(cfg.classifier)


def result_records(cfg: ReconstructionConfig, loaded: LoadedMAE, result: dict, data_name: str, eval_settings: dict,
                   wall: float) -> list[Record]:
    """The records of one checkpoint's :func:`evaluate` result: ``reconstruction`` metrics, and Table XV's
    ``reconstruction-classification`` ones where a classifier was asked for."""
    fields, config = record_base(loaded, cfg, eval_settings)
    prov = provenance(config, loaded.path, wall)
    extra = dict(images=result["images"], eval_mask_ratio=cfg.mask_ratio, unnorm=cfg.unnorm,
                 norm_pix=loaded.norm_pix, name=loaded.name)
    records = [Record(**fields, protocol="reconstruction", metric=metric, value=result[metric], dataset=data_name,
                      seed=cfg.seed, extra=extra, **prov) for metric in eval_settings["metrics"]]
    if cfg.classifier:
        cls_extra = dict(extra, top1_original=result["top1_original"], top1_reconstructed=result["top1"],
                         classifier=cfg.classifier, classifier_sha256=eval_settings["classifier_sha256"])
        records += [Record(**fields, protocol="reconstruction-classification", metric=metric, value=result[metric],
                           dataset=data_name, seed=cfg.seed, extra=cls_extra, **prov)
                    for metric in ("top1", "top1_original")]
    return records


def run(cfg: ReconstructionConfig) -> list[Record]:
    """Reconstruct and measure for every checkpoint of the config; append the records to
    ``OUTPUT_DIR/records.jsonl`` (saving ``config.json`` beside them) and return them."""
    device = pick_device(cfg.device)
    metrics = cfg.chosen_metrics()
    records_file = records_path(cfg)
    models = load_models(cfg)
    first = models[0]
    lpips = build_lpips(cfg.lpips_weights, cfg.lpips_net, first.img_size, cfg.lpips_lin_weights) \
        if "lpips" in metrics else None
    fid = build_fid(cfg.fid_weights) if "fid" in metrics else None
    classifier, classifier_sha = table_xv_classifier(cfg, first)
    eval_settings = cfg.eval_settings(classifier_sha)
    records = []
    for loaded, dataset, data_name in each_model(cfg, models):
        started = time.perf_counter()
        result = evaluate(loaded, dataset, metrics, cfg.mask_ratio, cfg.seed, cfg.unnorm, cfg.batch_size, device,
                          lpips, fid, classifier)
        wall = time.perf_counter() - started
        records += result_records(cfg, loaded, result, data_name, eval_settings, wall)
        shown = ", ".join(f"{k} {v:.4g}" for k, v in result.items() if k != "images")
        print(f"{loaded.name} ({loaded.path}): {shown} on {result['images']} images, {wall:.1f} s")
    write_outputs(cfg, records_file, records)
    return records


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, ReconstructionConfig)


def main(args: argparse.Namespace) -> int:
    run(ReconstructionConfig.resolve(args))
    return 0
