"""``emae visualize``: reconstruction grids over several mask seeds, like the paper's Figures 1 and 4.

One row per image and checkpoint (the checkpoints of one image on adjacent rows, so MAE and EMAE can be
compared); columns: the original, then for each mask seed the masked input and the reconstruction with the
visible patches pasted back. Masked patches of the input are shown at the data mean (0 after
normalisation), as in MAE's demo. Predictions of a ``norm_pix_loss`` model are un-normalised by default
with the statistics of the visible patches (``--unnorm visible``, leak-free); ``--unnorm target`` uses each
masked patch's own statistics from the original image, as MAE's visualisations do, which lends the
reconstructions brightness and contrast the model never saw (see :mod:`emae.reconstruct`). Each mask seed
draws the same masks for every checkpoint, so differences between the reconstructions of one column are the
models' and differences along a row are the masks'.
The settings (:class:`VisualizeConfig`) are saved as ``config.json`` beside the figure.

    emae visualize --checkpoint runs/mae/checkpoint.pth runs/emae/checkpoint.pth --num-images 4 \\
        --seeds 0 1 2 --out docs/figures/fmnist_reconstructions.png
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from analysis.loader import (MASK_HELP, AnalysisConfig, LoadedMAE, add_config_arguments, check_choice, eval_dataset,
                             image_transform, load_models)
from emae.errors import EmaeError
from emae.reconstruct import UNNORM_STATS, masked_inputs, reconstruct, seeded_masks, to_unit_range
from emae.settings import pick_device

TITLE_HEIGHT = 16  # pixels of the column-title band
LABEL_WIDTH = 48  # pixels of the row-label band, drawn when there are several checkpoints


@dataclass
class VisualizeConfig(AnalysisConfig):
    """``emae visualize``'s settings: which images, the mask seeds, and the figure's layout and file."""

    help_for = dict(AnalysisConfig.help_for, **MASK_HELP, **{
        "images": "image files to reconstruct (default: images of the checkpoint's data)",
        "indices": "which images of the data (default: the first --num-images)",
        "seeds": "mask seeds, one column pair each (default 0 1 2)",
        "cell": "pixels per image cell (default 96)",
        "pad": "pixels between cells (default 2)",
        "titles": "column titles and row labels (default: drawn; --no-titles leaves them out)",
        "out": "the image file to write, config.json beside it (default reconstructions.png)",
    })
    num_images: int = 4
    images: tuple[str, ...] | None = None
    indices: tuple[int, ...] | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    mask_ratio: float = 0.75
    unnorm: str = "visible"  # visible, target (leaks the masked patches' statistics)
    cell: int = 96
    pad: int = 2
    titles: bool = True
    out: str = "reconstructions.png"

    def validate(self) -> "VisualizeConfig":
        super().validate()
        if self.cell < 1 or self.pad < 0:
            raise EmaeError(f"--cell must be >= 1 and --pad >= 0, got cell={self.cell}, pad={self.pad}")
        check_choice("unnorm", self.unnorm, UNNORM_STATS)
        return self


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
                        stats: str = "visible") -> tuple[list[list[Tensor]], list[str], list[str]]:
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


def load_images(cfg: VisualizeConfig, loaded: LoadedMAE) -> Tensor:
    """The images to show, preprocessed for the model: (B, C, H, W); the config's image files, else its
    ``indices`` (by default the first ``num_images``) of the data."""
    if cfg.images:
        from emae.data import open_image

        transform = image_transform(cfg, loaded)
        mode = "L" if loaded.in_chans == 1 else "RGB"
        return torch.stack([transform(open_image(p, mode)) for p in cfg.images])
    dataset = eval_dataset(replace(cfg, num_images=0), loaded)
    indices = cfg.indices if cfg.indices else range(min(cfg.num_images, len(dataset)))
    bad = [i for i in indices if not 0 <= i < len(dataset)]
    if bad:
        raise EmaeError(f"--indices {bad} are outside the {len(dataset)} images of the data")
    return torch.stack([dataset[i][0] for i in indices])


def run(cfg: VisualizeConfig) -> Path:
    """Draw the grid of the config's checkpoints and images to ``out``, ``config.json`` beside it; returns the
    figure's path."""
    out = Path(cfg.out)
    if out.suffix.lower() not in Image.registered_extensions() or out.is_dir():
        raise EmaeError(f"{out}: --out must name an image file (.png, .jpg, ...)")
    device = pick_device(cfg.device)
    models = load_models(cfg)
    for m in models:
        m.model.to(device)
        for note in m.notes:
            print(f"{m.path}: {note}")
    imgs = load_images(cfg, models[0])
    rows, titles, labels = reconstruction_rows(models, imgs, cfg.seeds, cfg.mask_ratio, cfg.unnorm)
    show_labels = len(models) > 1 and cfg.titles
    grid = compose_grid(rows, cfg.cell, cfg.pad, titles if cfg.titles else None, labels if show_labels else None)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out, optimize=True)
    cfg.save(out.parent)
    print(f"wrote {out} ({grid.width}x{grid.height} px: {len(rows)} rows, {len(titles)} columns)")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, VisualizeConfig)


def main(args: argparse.Namespace) -> int:
    run(VisualizeConfig.resolve(args))
    return 0
