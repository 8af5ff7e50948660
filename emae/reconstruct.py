"""Reconstructions of masked images by a pre-trained MAE / EMAE model, as pure functions of tensors.

Shared by ``emae visualize`` (Figures 1 and 4), ``emae eval consistency`` and ``emae eval reconstruction``
(Tables XV and XVI). Shapes: B images, M masks (or parts) per image, N patches, P = patch_size**2 * C values
per patch. Mask value 1 means *masked*, as everywhere in :mod:`emae.masking`.

Un-normalising ``norm_pix_loss`` predictions. A model trained with ``norm_pix_loss`` predicts each patch
normalised by its own mean and standard deviation, which a real reconstruction cannot know for a masked
patch. Two choices are offered (``stats``):

- ``target`` (default): each patch's mean and variance taken from the original image, as the MAE authors'
  visualisations of norm-pix models do. Brightness and contrast of every patch come from the original; the
  model supplies the structure inside each patch. This is what the figures and Table XVI use by default.
- ``visible``: one mean and variance per image and mask, pooled over that mask's visible pixels: nothing of
  the masked patches is used, so it is an honest reconstruction, but flat (every masked patch gets the same
  brightness and contrast).

Models trained without ``norm_pix_loss`` predict pixels directly and need neither. In every reconstruction
the visible patches are pasted back from the original image.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import torch
from torch import Tensor

from emae.checkpoint import HEADS_BY_WIDTH, load_checkpoint, load_mae_state, model_state
from emae.config import IMAGENET_MEAN, IMAGENET_STD
from emae.errors import EmaeError
from emae.losses import patchify, unpatchify
from emae.masking import PartMasks, random_k_masks
from emae.models import ARCHS, MaskedAutoencoderViT, build_model

UNNORM_STATS = ("target", "visible")
EPS = 1.0e-6  # as in emae.losses.pixel_targets


# ---------------------------------------------------------------------------------------------------------
# loading a model with its decoder


@dataclass
class LoadedMAE:
    """A pre-trained encoder-decoder and what is needed to feed it images and read its predictions."""

    model: MaskedAutoencoderViT
    arch: str  # a registered architecture name, or a description of the shape for an unknown one
    img_size: int
    in_chans: int
    norm_pix: bool  # whether the decoder predicts per-patch normalised pixels
    mean: tuple[float, ...]  # the input normalisation the model was pre-trained with
    std: tuple[float, ...]
    config: dict | None  # our pre-training config; None for an official MAE checkpoint
    path: str
    name: str = ""  # a short label (the method for ours, the file stem otherwise)
    notes: list[str] = field(default_factory=list)  # assumptions made while loading (printed by the commands)


def _infer_shape(state: dict[str, Tensor], path: str | os.PathLike) -> dict:
    """Encoder-decoder hyper-parameters read from an official-layout state dict (heads excepted)."""
    required = ("patch_embed.proj.weight", "pos_embed", "decoder_embed.weight", "decoder_pred.weight")
    missing = [k for k in required if k not in state]
    if missing:
        decoder = [k for k in missing if k.startswith("decoder_")]
        if decoder:
            raise EmaeError(f"{path}: the checkpoint has no decoder (missing {decoder}); reconstructions need an "
                            f"MAE checkpoint with its decoder, e.g. MAE's *_full.pth or one of our pretrain "
                            f"checkpoints, not an encoder-only export")
        raise EmaeError(f"{path}: not an MAE checkpoint: missing the key(s) {missing}")
    embed_dim, in_chans, patch, _ = state["patch_embed.proj.weight"].shape
    tokens = state["pos_embed"].shape[1] - 1
    grid = int(round(tokens**0.5))
    if grid * grid != tokens:
        raise EmaeError(f"{path}: pos_embed has {tokens} patch positions, not a square grid")

    def depth(prefix: str) -> int:
        return 1 + max((int(m.group(1)) for k in state if (m := re.match(rf"{prefix}\.(\d+)\.", k))), default=-1)

    return dict(img_size=grid * patch, in_chans=in_chans, patch_size=patch, embed_dim=embed_dim,
                depth=depth("blocks"), decoder_embed_dim=state["decoder_embed.weight"].shape[0],
                decoder_depth=depth("decoder_blocks"),
                mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / embed_dim if "blocks.0.mlp.fc1.weight"
                in state else 4.0)


def default_heads(width: int, path: str | os.PathLike) -> int:
    """The usual attention heads of a ViT of this width: 64-d heads (``HEADS_BY_WIDTH`` where it differs)."""
    if width in HEADS_BY_WIDTH:
        return HEADS_BY_WIDTH[width]
    if width % 64:
        raise EmaeError(f"{path}: cannot tell the number of attention heads of a {width}-d encoder; pass it "
                        f"(--num-heads)")
    return width // 64


def _arch_name(shape: dict, num_heads: int, decoder_heads: int) -> str:
    for name, arch in ARCHS.items():
        if (arch.patch_size, arch.embed_dim, arch.depth, arch.num_heads, arch.decoder_embed_dim, arch.decoder_depth,
                arch.decoder_num_heads) == (shape["patch_size"], shape["embed_dim"], shape["depth"], num_heads,
                                            shape["decoder_embed_dim"], shape["decoder_depth"], decoder_heads):
            return name
    return f"vit_{shape['embed_dim']}d{shape['depth']}_patch{shape['patch_size']}"


def load_mae_model(path: str | os.PathLike, num_heads: int | None = None, decoder_num_heads: int | None = None,
                   norm_pix: bool | None = None, mean: Iterable[float] | None = None,
                   std: Iterable[float] | None = None) -> LoadedMAE:
    """Build the ``MaskedAutoencoderViT`` a checkpoint holds, decoder included, and load it strictly.

    Our pre-training checkpoints carry their config (architecture, image size, ``norm_pix_loss``, mean and
    std). For an official MAE checkpoint (``{"model": state}`` with the decoder) the shape is read from the
    weights; attention heads cannot be: ``num_heads`` defaults to the usual 64-d heads of the width
    (:func:`default_heads`) and ``decoder_num_heads`` to 32-d heads (16 for MAE's 512-d decoder); the heads
    of our checkpoints come from their architecture. ``norm_pix`` defaults to True (MAE's released
    ``*_full.pth`` weights were trained with ``norm_pix_loss``; its ``mae_visualize_*`` weights were not:
    pass False for those) and mean/std to ImageNet's. Explicit ``norm_pix``, mean and std override our
    config too.
    """
    obj = load_checkpoint(path)
    state = model_state(obj, path)
    config = obj.get("config") if isinstance(obj.get("config"), dict) else None
    shape = _infer_shape(state, path)
    notes: list[str] = []
    if config and "arch" in config:
        arch = ARCHS.get(config["arch"])
        if arch is None:
            raise EmaeError(f"{path}: the checkpoint's architecture {config['arch']!r} is not registered")
        have = (shape["patch_size"], shape["embed_dim"], shape["depth"])
        if have != (arch.patch_size, arch.embed_dim, arch.depth):
            raise EmaeError(f"{path}: the weights are a ViT with patch {have[0]}, width {have[1]} and depth "
                            f"{have[2]}, but its config names {config['arch']} (patch {arch.patch_size}, width "
                            f"{arch.embed_dim}, depth {arch.depth})")
        num_heads, decoder_num_heads = arch.num_heads, arch.decoder_num_heads
    else:
        if num_heads is None:
            num_heads = default_heads(shape["embed_dim"], path)
            notes.append(f"assumed {num_heads} encoder heads (64-d heads)")
        if decoder_num_heads is None:
            decoder_num_heads = max(1, shape["decoder_embed_dim"] // 32)
            notes.append(f"assumed {decoder_num_heads} decoder heads (32-d heads)")
    for what, dim, heads in (("encoder", shape["embed_dim"], num_heads),
                             ("decoder", shape["decoder_embed_dim"], decoder_num_heads)):
        if dim % heads:
            raise EmaeError(f"{path}: {heads} {what} heads do not divide its width {dim}")
    name = _arch_name(shape, num_heads, decoder_num_heads)
    if config and "arch" in config:
        model = build_model(config["arch"], shape["img_size"], shape["in_chans"])
    else:
        model = MaskedAutoencoderViT(num_heads=num_heads, decoder_num_heads=decoder_num_heads,
                                     **{k: v for k, v in shape.items()})
    missing = load_mae_state(model, state, path)
    if missing:
        shown = missing[:6] + (["..."] if len(missing) > 6 else [])
        raise EmaeError(f"{path}: the checkpoint has no decoder (missing {shown}); reconstructions need an MAE "
                        f"checkpoint with its decoder")
    model.eval()
    if norm_pix is None:
        norm_pix = bool(config.get("norm_pix_loss", True)) if config else True
        if not config:
            notes.append("assumed norm_pix_loss=True (pass --norm-pix false for MAE's visualisation weights)")
    if mean is None or std is None:
        if config and "mean" in config:
            mean, std = config["mean"], config["std"]
        else:
            mean, std = (IMAGENET_MEAN, IMAGENET_STD) if shape["in_chans"] == 3 else ((0.5,) * shape["in_chans"],) * 2
            notes.append(f"assumed input mean {tuple(mean)} and std {tuple(std)}")
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    if len(mean) != shape["in_chans"] or len(std) != shape["in_chans"]:
        raise EmaeError(f"{path}: mean/std need {shape['in_chans']} values, got {mean} / {std}")
    label = config.get("method", "") if config else ""
    return LoadedMAE(model, config["arch"] if config and "arch" in config else name, shape["img_size"],
                     shape["in_chans"], norm_pix, mean, std, config, str(path), label or Path(path).stem, notes)


# ---------------------------------------------------------------------------------------------------------
# masks, predictions, reconstructions


def random_masks(batch: int, masks: int, num_patches: int, mask_ratio: float, generator: torch.Generator,
                 device: torch.device | str = "cpu") -> PartMasks:
    """M independent MAE random masks per image, drawn from ``generator``.

    Returns:
        PartMasks with ids_keep (B, M, int(N * (1 - mask_ratio))) and mask (B, M, N).
    """
    noise = torch.rand(batch, masks, num_patches, generator=generator, device=generator.device)
    return random_k_masks(noise.to(device), mask_ratio)


def seeded_masks(batch: int, num_patches: int, mask_ratio: float, seeds: Iterable[int],
                 device: torch.device | str = "cpu") -> PartMasks:
    """One MAE random mask per seed, the same for every run with that seed: mask m of image b comes from
    row b of the noise that ``torch.Generator().manual_seed(seeds[m])`` draws.

    Returns:
        PartMasks with ids_keep (B, M, L) and mask (B, M, N), M = len(seeds).
    """
    noise = torch.stack([torch.rand(batch, num_patches, generator=torch.Generator().manual_seed(int(s)))
                         for s in seeds], dim=1)
    return random_k_masks(noise.to(device), mask_ratio)


@torch.no_grad()
def predict(model: MaskedAutoencoderViT, imgs: Tensor, masks: PartMasks) -> Tensor:
    """The decoder's predictions for every mask: imgs (B, C, H, W) -> (B, M, N, P), in the model's output
    space (per-patch normalised for a ``norm_pix_loss`` model)."""
    return model(imgs, masks).float()


def unnormalize_predictions(pred: Tensor, imgs: Tensor, mask: Tensor, patch_size: int, norm_pix: bool,
                            stats: str = "target") -> Tensor:
    """Predictions in the image's (mean/std-normalised) pixel space.

    Args:
        pred: (B, M, N, P) decoder output.
        imgs: (B, C, H, W) the model's input images.
        mask: (B, M, N), 1 = masked.
        stats: ``target`` (each patch's own mean and variance from ``imgs``) or ``visible`` (one mean and
            variance per image and mask over the visible pixels); see the module docstring.
    Returns:
        (B, M, N, P)
    """
    if not norm_pix:
        return pred
    target = patchify(imgs, patch_size).float()  # (B, N, P)
    if stats == "target":
        mean = target.mean(dim=-1, keepdim=True).unsqueeze(1)  # (B, 1, N, 1)
        var = target.var(dim=-1, keepdim=True).unsqueeze(1)
    elif stats == "visible":
        visible = (1.0 - mask).unsqueeze(-1)  # (B, M, N, 1)
        count = visible.sum(dim=(2, 3), keepdim=True) * target.shape[-1]
        mean = (visible * target.unsqueeze(1)).sum(dim=(2, 3), keepdim=True) / count
        var = (visible * (target.unsqueeze(1) - mean) ** 2).sum(dim=(2, 3), keepdim=True) / (count - 1).clamp(min=1)
    else:
        raise EmaeError(f"unknown un-normalisation statistics {stats!r}; choose one of {UNNORM_STATS}")
    return pred * (var + EPS) ** 0.5 + mean


def paste_visible(pred: Tensor, imgs: Tensor, mask: Tensor, patch_size: int) -> Tensor:
    """Reconstructions: visible patches from the image, masked ones from the (pixel-space) predictions.

    Args:
        pred: (B, M, N, P) predictions in pixel space (:func:`unnormalize_predictions`).
        imgs: (B, C, H, W).
        mask: (B, M, N), 1 = masked.
    Returns:
        (B, M, C, H, W)
    """
    b, m = pred.shape[:2]
    target = patchify(imgs, patch_size).float().unsqueeze(1)
    w = mask.unsqueeze(-1).to(pred.dtype)
    patches = pred * w + target * (1.0 - w)
    return _to_images(patches, imgs, patch_size).view(b, m, *imgs.shape[1:])


def masked_inputs(imgs: Tensor, mask: Tensor, patch_size: int, fill: float = 0.0) -> Tensor:
    """What the encoder sees: visible patches, the masked ones set to ``fill`` (0 = the data mean, as MAE's demo).

    Args:
        imgs: (B, C, H, W); mask (B, M, N), 1 = masked.
    Returns:
        (B, M, C, H, W)
    """
    b, m = mask.shape[:2]
    target = patchify(imgs, patch_size).float().unsqueeze(1)
    w = mask.unsqueeze(-1)
    patches = target * (1.0 - w) + fill * w
    return _to_images(patches, imgs, patch_size).view(b, m, *imgs.shape[1:])


def _to_images(patches: Tensor, imgs: Tensor, patch_size: int) -> Tensor:
    """(B, M, N, P) -> (B * M, C, H, W) for the patch grid of ``imgs``."""
    b, m, n, p = patches.shape
    c, h, w = imgs.shape[1:]
    return unpatchify(patches.reshape(b * m, n, p), patch_size, c, (h // patch_size, w // patch_size))


def reconstruct(model: MaskedAutoencoderViT, imgs: Tensor, masks: PartMasks, norm_pix: bool,
                stats: str = "target") -> Tensor:
    """Reconstruct each image under each mask, visible patches pasted back: (B, C, H, W) -> (B, M, C, H, W)."""
    pred = predict(model, imgs, masks)
    pixels = unnormalize_predictions(pred, imgs, masks.mask, model.patch_size, norm_pix, stats)
    return paste_visible(pixels, imgs, masks.mask, model.patch_size)


def to_unit_range(imgs: Tensor, mean: Iterable[float], std: Iterable[float]) -> Tensor:
    """Undo the input normalisation and clip to [0, 1]: (..., C, H, W) -> same shape."""
    mean_t = torch.tensor(tuple(mean), dtype=imgs.dtype, device=imgs.device).view(-1, 1, 1)
    std_t = torch.tensor(tuple(std), dtype=imgs.dtype, device=imgs.device).view(-1, 1, 1)
    return (imgs * std_t + mean_t).clamp(0.0, 1.0)


# ---------------------------------------------------------------------------------------------------------
# the consistency metric


def pairwise_consistency(pred: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """How much the predictions of the same patch under different masks disagree, per image.

    Args:
        pred: (B, M, N, P) predictions of each image under M masks (in any one space).
        mask: (B, M, N), 1 = masked.
    Returns:
        ``(l1, var)``, each (B,):

        - ``l1``: the mean, over the ordered pairs of masks (i, j), i != j, and the patches masked in both,
          of the mean absolute difference of the two predictions over the P values; every (pair, patch)
          counts once.
        - ``var``: the mean, over the patches masked in at least two masks, of the variance (ddof=1) of the
          predictions across those masks, averaged over the P values.

        Both are NaN for an image where no patch is masked twice.
    """
    b, m, n, _ = pred.shape
    mask = mask.to(pred.dtype)
    l1_sum = pred.new_zeros(b)
    pairs = pred.new_zeros(b)
    for i in range(m - 1):
        dist = (pred[:, i : i + 1] - pred[:, i + 1 :]).abs().mean(dim=-1)  # (B, M - i - 1, N)
        both = mask[:, i : i + 1] * mask[:, i + 1 :]
        l1_sum += (dist * both).sum(dim=(1, 2))
        pairs += both.sum(dim=(1, 2))
    w = mask.unsqueeze(-1)  # (B, M, N, 1)
    count = w.sum(dim=1)  # (B, N, 1)
    mean = (w * pred).sum(dim=1) / count.clamp(min=1)
    var = (w * (pred - mean.unsqueeze(1)) ** 2).sum(dim=1) / (count - 1).clamp(min=1)  # (B, N, P)
    twice = (count.squeeze(-1) >= 2).to(pred.dtype)  # (B, N)
    var_mean = (var.mean(dim=-1) * twice).sum(dim=1) / twice.sum(dim=1)
    return l1_sum / pairs, var_mean


# ---------------------------------------------------------------------------------------------------------
# data


def batches(dataset, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """(images, labels) batches of a map-style dataset in index order, single process (small evaluations)."""
    from torch.utils.data import DataLoader

    yield from DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise EmaeError("--device cuda was asked for but CUDA is not available")
    return torch.device(name)


# ---------------------------------------------------------------------------------------------------------
# what the three analysis commands share: model and data options, evaluation data, record fields


def add_model_arguments(parser, multiple: bool = True) -> None:
    """``--checkpoint`` and the options that complete an official MAE checkpoint's description."""
    parser.add_argument("--checkpoint", required=True, nargs="+" if multiple else None, metavar="CKPT",
                        help="pre-training checkpoint(s) with the decoder: ours, or official MAE ({'model': ...})")
    parser.add_argument("--names", nargs="+", default=None,
                        help="a label per checkpoint (default: the method in its config, else the file name)")
    parser.add_argument("--num-heads", type=int, default=None,
                        help="encoder heads of an official checkpoint (default: 64-d heads)")
    parser.add_argument("--decoder-num-heads", type=int, default=None,
                        help="decoder heads of an official checkpoint (default: 32-d heads, 16 for MAE's decoder)")
    parser.add_argument("--norm-pix", choices=("auto", "true", "false"), default="auto",
                        help="whether the decoder predicts per-patch normalised pixels (auto: the checkpoint's "
                             "config, else true)")
    parser.add_argument("--mean", type=float, nargs="+", default=None, help="input normalisation mean (default: "
                        "the checkpoint's config, else ImageNet's)")
    parser.add_argument("--std", type=float, nargs="+", default=None, help="input normalisation std")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")


def add_data_arguments(parser, default_images: int) -> None:
    """The evaluation images: the checkpoint's own data set by default (Fashion-MNIST's test split)."""
    parser.add_argument("--dataset", default=None, choices=("fashion-mnist", "imagefolder", "images"),
                        help="kind of data (default: the checkpoint's pre-training data kind, else imagefolder)")
    parser.add_argument("--data", default=None,
                        help="data folder: Fashion-MNIST's idx files, or the split folder itself (e.g. "
                             "imagenet/val) for imagefolder and images (default: the checkpoint's)")
    parser.add_argument("--dataset-name", default=None,
                        help="the data's name in the records (default: 'fashion-mnist test' or the folder name)")
    parser.add_argument("--num-images", type=int, default=default_images,
                        help=f"evaluate the first N images (0: all; default {default_images})")
    parser.add_argument("--crop-ratio", type=float, default=None,
                        help="resize to img_size / ratio, then centre-crop (default 1.0: the whole image, as "
                             "MAE's demo)")
    parser.add_argument("--batch-size", type=int, default=64)


def load_models(args) -> list[LoadedMAE]:
    """Every ``--checkpoint`` of the parsed arguments, labelled by ``--names``."""
    norm_pix = {"auto": None, "true": True, "false": False}[args.norm_pix]
    paths = args.checkpoint if isinstance(args.checkpoint, list) else [args.checkpoint]
    if args.names and len(args.names) != len(paths):
        raise EmaeError(f"--names has {len(args.names)} labels for {len(paths)} checkpoints")
    models = []
    for i, path in enumerate(paths):
        loaded = load_mae_model(path, args.num_heads, args.decoder_num_heads, norm_pix, args.mean, args.std)
        if args.names:
            loaded.name = args.names[i]
        models.append(loaded)
    shapes = {(m.img_size, m.in_chans) for m in models}
    if len(shapes) > 1:
        raise EmaeError(f"the checkpoints take different inputs (image size, channels): {sorted(shapes)}")
    return models


def data_source(args, loaded: LoadedMAE) -> tuple[str, str, str]:
    """(kind, folder, name in records) of the evaluation images, defaulting to the checkpoint's data."""
    from emae.config import FASHION_MNIST_DIR

    config = loaded.config or {}
    kind = args.dataset or config.get("dataset") or "imagefolder"
    data = args.data or (config.get("data") if config.get("dataset") == kind else None)
    if kind == "fashion-mnist" and data is None:
        data = FASHION_MNIST_DIR
    if data is None:
        raise EmaeError("--data is needed: the folder of evaluation images")
    name = args.dataset_name or ("fashion-mnist test" if kind == "fashion-mnist" else Path(data).name)
    return kind, data, name


def eval_dataset(args, loaded: LoadedMAE):
    """The evaluation images, preprocessed for the model: Fashion-MNIST's test split, or a folder."""
    from emae.data import build_dataset, eval_transform

    kind, data, _ = data_source(args, loaded)
    crop_ratio = args.crop_ratio if args.crop_ratio is not None else 1.0
    transform = eval_transform(loaded.img_size, loaded.mean, loaded.std, crop_ratio)
    if kind == "fashion-mnist":  # its test split is in no class order: the first N are a fair sample
        return build_dataset(kind, data, False, transform, loaded.in_chans, args.num_images)
    dataset = build_dataset(kind, data, False, transform, loaded.in_chans)
    return spread_subset(dataset, args.num_images)


def each_model(args, models: list[LoadedMAE]):
    """Yield (model, its evaluation images, the images' name in records), printing each model's load notes."""
    for loaded in models:
        for note in loaded.notes:
            print(f"{loaded.path}: {note}")
        yield loaded, eval_dataset(args, loaded), data_source(args, loaded)[2]


def spread_subset(dataset, count: int):
    """``count`` evenly spaced items of a dataset (a class-sorted folder gets every class), or all of it."""
    from torch.utils.data import Subset

    if not count or count >= len(dataset):
        return dataset
    return Subset(dataset, [int(i * len(dataset) / count) for i in range(count)])


def record_base(loaded: LoadedMAE, args, settings: dict) -> tuple[dict, dict]:
    """(backbone fields of a record, its config): our pre-training config with the evaluation's settings
    under ``eval``, so that the report tells variants (K, mask ratio) apart by the pre-training values."""
    from results.records import backbone_fields

    fields = backbone_fields(loaded.config, loaded.arch, {"method": getattr(args, "method", None),
                                                          "pretrain_epochs": getattr(args, "pretrain_epochs", None),
                                                          "pretrain_data": getattr(args, "pretrain_data", None)})
    config = dict(loaded.config or {})
    config["eval"] = dict(settings, checkpoint=loaded.path, norm_pix=loaded.norm_pix, mean=list(loaded.mean),
                          std=list(loaded.std))
    return fields, config


def records_path(args) -> Path:
    """``OUTPUT_DIR/records.jsonl``, whose existing records must be readable: a damaged file is an error
    before the work, not after it."""
    from results.records import RECORDS_FILE, read_records

    path = Path(args.output_dir) / RECORDS_FILE
    if path.exists():
        read_records(path)
    return path


def add_record_arguments(parser) -> None:
    parser.add_argument("--output-dir", required=True, help="records.jsonl (and any figure) are written here")
    parser.add_argument("--method", default=None, help="the pre-training method in the records (default: the "
                        "checkpoint's config, else mae)")
    parser.add_argument("--pretrain-epochs", type=int, default=None,
                        help="pre-training epochs in the records (default: the config's, else -1)")
    parser.add_argument("--pretrain-data", default=None, help="pre-training data in the records")
