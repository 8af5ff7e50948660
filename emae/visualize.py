"""``emae visualize``: reconstruction grids over several mask seeds, like the paper's Figures 1 and 4.

One row per image and checkpoint (the checkpoints of one image on adjacent rows, so MAE and EMAE can be
compared); columns: the original, then for each mask seed the masked input and the reconstruction with the
visible patches pasted back. Masked patches of the input are shown at the data mean (0 after
normalisation), as in MAE's demo. Predictions of a ``norm_pix_loss`` model are un-normalised with each
patch's statistics from the original image by default (``--unnorm target``, as MAE's visualisations do;
see :mod:`emae.reconstruct`). Each mask seed draws the same masks for every checkpoint, so differences
between the reconstructions of one column are the models' and differences along a row are the masks'.

    emae visualize --checkpoint runs/mae/checkpoint.pth runs/emae/checkpoint.pth --num-images 4 \\
        --seeds 0 1 2 --out docs/figures/fmnist_reconstructions.png
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from emae.errors import EmaeError
from emae.reconstruct import (UNNORM_STATS, LoadedMAE, add_data_arguments, add_model_arguments, eval_dataset,
                              load_models, masked_inputs, pick_device, reconstruct, seeded_masks, to_unit_range)

TITLE_HEIGHT = 16  # pixels of the column-title band
LABEL_WIDTH = 48  # pixels of the row-label band, drawn when there are several checkpoints


def grid_size(rows: int, cols: int, cell: int, pad: int, titles: bool, labels: bool) -> tuple[int, int]:
    """(width, height) in pixels of a grid: ``pad`` around and between ``cell`` x ``cell`` images, plus a
    title band on top and a label band on the left when asked."""
    width = (LABEL_WIDTH if labels else 0) + pad + cols * (cell + pad)
    height = (TITLE_HEIGHT if titles else 0) + pad + rows * (cell + pad)
    return width, height


def to_uint8(img: Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1], C = 1 or 3 -> (H, W, 3) uint8."""
    arr = (img.detach().float().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr


def compose_grid(cells: Sequence[Sequence[Tensor]], cell: int = 96, pad: int = 2,
                 titles: Sequence[str] | None = None, labels: Sequence[str] | None = None,
                 background: int = 255) -> Image.Image:
    """Lay out images on a grid.

    Args:
        cells: rows of images, each (C, H, W) in [0, 1]; every row has the same length.
        cell: side in pixels each image is scaled to (nearest neighbour, so patches stay sharp).
        titles: one per column, drawn above it.
        labels: one per row, drawn at its left.
    Returns:
        an RGB image of :func:`grid_size` pixels.
    """
    rows, cols = len(cells), len(cells[0]) if cells else 0
    if rows == 0 or cols == 0 or any(len(r) != cols for r in cells):
        raise EmaeError("a grid needs at least one row, and rows of equal length")
    width, height = grid_size(rows, cols, cell, pad, titles is not None, labels is not None)
    canvas = Image.new("RGB", (width, height), (background,) * 3)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    x0 = LABEL_WIDTH if labels is not None else 0
    y0 = TITLE_HEIGHT if titles is not None else 0
    for c, title in enumerate(titles or []):
        draw.text((x0 + pad + c * (cell + pad) + cell // 2, y0 // 2), _fit(draw, font, title, cell + pad),
                  fill=(0, 0, 0), font=font, anchor="mm")
    for r, row in enumerate(cells):
        top = y0 + pad + r * (cell + pad)
        if labels is not None:
            draw.text((LABEL_WIDTH // 2, top + cell // 2), _fit(draw, font, labels[r], LABEL_WIDTH), fill=(0, 0, 0),
                      font=font, anchor="mm")
        for c, img in enumerate(row):
            tile = Image.fromarray(to_uint8(img)).resize((cell, cell), Image.NEAREST)
            canvas.paste(tile, (x0 + pad + c * (cell + pad), top))
    return canvas


def _fit(draw: ImageDraw.ImageDraw, font, text: str, width: int) -> str:
    while text and draw.textlength(text, font=font) > width - 2:
        text = text[:-1]
    return text


def reconstruction_rows(models: Sequence[LoadedMAE], imgs: Tensor, seeds: Sequence[int], mask_ratio: float,
                        stats: str = "target") -> tuple[list[list[Tensor]], list[str], list[str]]:
    """The grid's cells in [0, 1]: for each image, one row per model: original, (masked, reconstruction)
    per seed. imgs (B, C, H, W) normalised with the models' mean/std. Returns (rows, titles, labels)."""
    first = models[0]
    device = next(first.model.parameters()).device
    imgs = imgs.to(device)
    masks = seeded_masks(imgs.shape[0], first.model.num_patches, mask_ratio, seeds, device)
    per_model = []
    for m in models:
        if (m.mean, m.std) != (first.mean, first.std):
            raise EmaeError(f"{m.path}: normalised with mean/std {m.mean}/{m.std}, unlike {first.path}: "
                            f"visualise them separately")
        recon = reconstruct(m.model, imgs, masks, m.norm_pix, stats)  # (B, S, C, H, W)
        per_model.append(to_unit_range(recon, m.mean, m.std))
    shown = to_unit_range(masked_inputs(imgs, masks.mask, first.model.patch_size), first.mean, first.std)
    originals = to_unit_range(imgs, first.mean, first.std)
    rows, labels = [], []
    for b in range(imgs.shape[0]):
        for m, recon in zip(models, per_model):
            row = [originals[b]]
            for s in range(len(seeds)):
                row += [shown[b, s], recon[b, s]]
            rows.append(row)
            labels.append(m.name)
    titles = ["original"] + [t for s in seeds for t in (f"masked {s}", f"recon {s}")]
    return rows, titles, labels


def load_images(args: argparse.Namespace, loaded: LoadedMAE) -> Tensor:
    """The images to show, preprocessed for the model: (B, C, H, W)."""
    if args.images:
        from emae.data import eval_transform, open_image

        crop_ratio = args.crop_ratio if args.crop_ratio is not None else 1.0
        transform = eval_transform(loaded.img_size, loaded.mean, loaded.std, crop_ratio)
        mode = "L" if loaded.in_chans == 1 else "RGB"
        return torch.stack([transform(open_image(p, mode)) for p in args.images])
    dataset = eval_dataset(argparse.Namespace(**{**vars(args), "num_images": 0}), loaded)
    indices = args.indices if args.indices else range(min(args.num_images, len(dataset)))
    bad = [i for i in indices if not 0 <= i < len(dataset)]
    if bad:
        raise EmaeError(f"--indices {bad} are outside the {len(dataset)} images of the data")
    return torch.stack([dataset[i][0] for i in indices])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--images", nargs="+", default=None, metavar="IMAGE",
                        help="image files to reconstruct (default: images of the checkpoint's data)")
    parser.add_argument("--indices", type=int, nargs="+", default=None,
                        help="which images of the data (default: the first --num-images)")
    add_data_arguments(parser, default_images=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="mask seeds, one column pair each")
    parser.add_argument("--mask-ratio", type=float, default=0.75)
    parser.add_argument("--unnorm", choices=UNNORM_STATS, default="target",
                        help="statistics that un-normalise norm-pix predictions (see emae.reconstruct)")
    parser.add_argument("--cell", type=int, default=96, help="pixels per image cell")
    parser.add_argument("--pad", type=int, default=2, help="pixels between cells")
    parser.add_argument("--no-titles", action="store_true", help="leave out column titles and row labels")
    parser.add_argument("--out", default="reconstructions.png", help="the PNG to write")


def main(args: argparse.Namespace) -> int:
    if args.cell < 1 or args.pad < 0:
        raise EmaeError("--cell must be >= 1 and --pad >= 0")
    out = Path(args.out)
    if out.suffix.lower() not in Image.registered_extensions() or out.is_dir():
        raise EmaeError(f"{out}: --out must name an image file (.png, .jpg, ...)")
    device = pick_device(args.device)
    models = load_models(args)
    for m in models:
        m.model.to(device)
        for note in m.notes:
            print(f"{m.path}: {note}")
    imgs = load_images(args, models[0])
    rows, titles, labels = reconstruction_rows(models, imgs, args.seeds, args.mask_ratio, args.unnorm)
    show_labels = len(models) > 1 and not args.no_titles
    grid = compose_grid(rows, args.cell, args.pad, None if args.no_titles else titles,
                        labels if show_labels else None)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out, optimize=True)
    print(f"wrote {out} ({grid.width}x{grid.height} px: {len(rows)} rows, {len(titles)} columns)")
    return 0
