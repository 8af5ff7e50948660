"""Pre-training and evaluation datasets.

- Fashion-MNIST from the idx files torchvision downloads (``*-idx3-ubyte`` / ``*-idx1-ubyte``, gzipped or
  not), by default Debian's ``/usr/share/datasets/fashion-mnist``.
- ``imagefolder``: one folder per class (ImageNet's ``train/`` and ``val/``), through torchvision.
- ``images``: any tree of image files without labels (COCO ``train2017/``, OpenImages).
"""
from __future__ import annotations

import functools
import gzip
import json
import math
import os
import random
import shutil
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate
from torchvision import datasets, transforms
from torchvision.transforms import InterpolationMode
from torchvision.transforms.functional import get_image_size, hflip, resized_crop

from emae.errors import EmaeError
from emae.masking import AUGMENT_STREAM, image_key, image_keys
from emae.records import META_FILE

# each dataset's constants, in one place: where Debian's dataset-fashion-mnist installs it, and the input
# normalisation of each (Fashion-MNIST's own mean and std on the 0-1 scale; ImageNet's, as timm and MAE use)
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
_IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (the MNIST format), gzipped or not, checking its header against its size."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise EmaeError(f"{path}: cannot read idx file: {e}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise EmaeError(f"{path}: not an idx file of unsigned bytes (bad magic number)")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape))
    if len(data) - offset != expected:
        raise EmaeError(f"{path}: header says shape {shape} ({expected} bytes) but the file has "
                        f"{len(data) - offset} bytes of data (truncated?)")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def _find_idx(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem, f"FashionMNIST/raw/{stem}", f"FashionMNIST/raw/{stem}.gz"):
        if (root / name).is_file():
            return root / name
    raise EmaeError(f"{root}: Fashion-MNIST file {stem}(.gz) not found (install Debian's dataset-fashion-mnist "
                    f"or pass the folder holding torchvision's raw files)")


class FashionMNIST(Dataset):
    """Fashion-MNIST as (PIL image, label) pairs; ``limit`` keeps the first N images."""

    classes = FASHION_MNIST_CLASSES

    def __init__(self, root: str | os.PathLike, train: bool = True, transform: Callable | None = None,
                 limit: int = 0):
        root = Path(root)
        if not root.is_dir():
            raise EmaeError(f"{root}: data folder not found")
        split = "train" if train else "t10k"
        images = read_idx(_find_idx(root, f"{split}-images-idx3-ubyte"))
        labels = read_idx(_find_idx(root, f"{split}-labels-idx1-ubyte"))
        if len(images) != len(labels):
            raise EmaeError(f"{root}: {len(images)} {split} images but {len(labels)} labels")
        if limit:
            images, labels = images[:limit], labels[:limit]
        self.images = images
        self.targets = torch.from_numpy(labels.astype(np.int64))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        img = Image.fromarray(self.images[index], mode="L")
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[index])

    def __getitems__(self, indices: list[int]) -> list:
        """``[self[i] for i in indices]``; through an :class:`EvalTransform` or a :class:`TrainTransform`, computed
        as one batch."""
        batched = isinstance(self.transform, (EvalTransform, TrainTransform))
        if batched and self.transform.batches(self.images.shape[1:]):
            return list(zip(self.transform.batch(self.images[indices]), self.targets[indices].tolist()))
        return [self[i] for i in indices]


class ImageFiles(Dataset):
    """Every image file under a folder, without labels (label 0), in sorted order."""

    def __init__(self, root: str | os.PathLike, transform: Callable | None = None, mode: str = "RGB"):
        root = Path(root)
        if not root.is_dir():
            raise EmaeError(f"{root}: data folder not found")
        self.files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise EmaeError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)}) found")
        self.transform = transform
        self.mode = mode

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        img = open_image(self.files[index], self.mode)
        if self.transform is not None:
            img = self.transform(img)
        return img, 0


def open_image(path: str | os.PathLike, mode: str = "RGB") -> Image.Image:
    """Decode an image fully, converting it to ``mode``; an unreadable file is an error naming it."""
    try:
        with Image.open(path) as img:
            return img.convert(mode)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise BadImageError(f"{path}: cannot read image: {e}") from None


class BadImageError(EmaeError):
    """An image file that cannot be decoded."""


class SkipBadImages(Dataset):
    """Wraps a dataset so that an unreadable image yields ``None`` (with a warning naming it) instead of an
    error; :func:`collate_counting_skipped` drops those and counts them per batch."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            return self.dataset[index]
        except BadImageError as e:
            warnings.warn(f"skipped: {e}", stacklevel=1)
            return None


def collate_counting_skipped(batch: list) -> tuple:
    """``default_collate`` of the readable samples, with the number skipped appended: (images, labels, skipped)
    for (image, label) samples, (images, labels, indices, skipped) for those of :class:`PretrainImages`."""
    kept = [sample for sample in batch if sample is not None]
    if not kept:
        raise EmaeError(f"every image of a batch of {len(batch)} was unreadable")
    return (*default_collate(kept), len(batch) - len(kept))


def crop_box(width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float],
             rng: random.Random) -> tuple[int, int, int, int]:
    """The box of torchvision's ``RandomResizedCrop`` (MAE's pre-training crop), drawn from ``rng`` (a
    ``random.Random``, or the ``random`` module: its global generator).

    Up to 10 tries: an area (a fraction of the image's, uniform in ``scale``) and an aspect ratio (log-uniform in
    ``ratio``) give a rounded width and height; the first box that fits is placed uniformly inside the image.
    After 10 misses, the centre crop of the whole image, its aspect ratio clamped to ``ratio``.

    Returns:
        (top, left, height, width) of a box inside the image.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    if width / height < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif width / height > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class RandomResizedCrop(transforms.RandomResizedCrop):
    """torchvision's random resized crop with its box drawn by :func:`crop_box` from Python's global ``random``
    generator (as timm's crop draws its box): the same distribution of boxes, without torchvision's tensor op for
    each random number (up to ten tries of four each)."""

    @staticmethod
    def get_params(img, scale: tuple[float, float], ratio: tuple[float, float]) -> tuple[int, int, int, int]:
        return crop_box(*get_image_size(img), scale, ratio, random)


def _pil_bicubic(x: np.ndarray) -> np.ndarray:
    """Pillow's bicubic filter (Keys' cubic with a = -0.5, support 2), elementwise."""
    a, x = -0.5, np.abs(x)
    return np.where(x < 1.0, ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0,
                    np.where(x < 2.0, (((x - 5.0) * x + 8.0) * x - 4.0) * a, 0.0))


def bicubic_coefficients(start: np.ndarray, length: np.ndarray, size: int, out: int) -> np.ndarray:
    """Pillow's fixed-point coefficients of a bicubic upsampling of the span ``[start, start + length)`` of
    ``size`` pixels to ``out >= length`` pixels, one span per image: its ``precompute_coeffs`` (each output
    pixel's window of taps, normalised to sum 1) and ``normalize_coeffs_8bpc`` (rounded to 22 fractional bits),
    laid over all ``size`` input pixels with zeros outside the window.

    Args:
        start, length: (B,) integer spans, ``0 <= start``, ``1 <= length <= out``, ``start + length <= size``.

    Returns:
        (B, out, size) float64 integers: output pixel ``o`` of image ``b`` is
        ``clip8(2**21 + sum_x coef[b, o, x] * pixel[x])`` in Pillow's 8-bit resampling.
    """
    if (length > out).any():
        raise EmaeError(f"bicubic_coefficients upsamples: a span of {int(length.max())} pixels exceeds the output's "
                        f"{out}")
    center = (np.arange(out, dtype=np.float64)[None, :, None] + 0.5) * (length[:, None, None] / out)
    x = np.arange(size)[None, None, :] - start[:, None, None]  # in the span's coordinates
    window = (x >= np.maximum(np.trunc(center - 1.5), 0)) & (x < np.minimum(np.trunc(center + 2.5),
                                                                            length[:, None, None]))
    taps = np.where(window, _pil_bicubic(x - center + 0.5), 0.0)
    taps /= np.cumsum(taps, axis=-1)[..., -1:]  # summed in pixel order, as Pillow sums them
    return np.trunc(np.where(taps < 0, taps * 2.0 ** 22 - 0.5, taps * 2.0 ** 22 + 0.5))


@functools.lru_cache(maxsize=4)
def _coefficient_table(size: int, out: int) -> torch.Tensor:
    """:func:`bicubic_coefficients` of every span of ``size`` pixels, (length, start, out, size), computed once:
    entry ``[n, a]`` is the span ``[a, a + n)`` (zeros where it does not fit)."""
    lengths, starts = np.meshgrid(np.arange(size + 1), np.arange(size), indexing="ij")
    fits = (lengths >= 1) & (starts + lengths <= size)
    table = np.zeros((size + 1, size, out, size))
    table[fits] = bicubic_coefficients(starts[fits], lengths[fits], size, out)
    return torch.from_numpy(table)


def _clip8(sums: torch.Tensor) -> torch.Tensor:
    """Pillow's ``clip8`` of rounded fixed-point sums: the 8-bit values, as float64."""
    return torch.floor((sums + 2.0 ** 21) * 2.0 ** -22).clamp_(0, 255)


def resized_crops(images: np.ndarray, boxes: np.ndarray, size: int) -> torch.Tensor:
    """Bicubic resized crops of 8-bit grey images to at least their size, the values Pillow's
    ``img.crop(box).resize((size, size), BICUBIC)`` gives each (torchvision's ``resized_crop`` of a PIL image),
    computed as two batched products:
    the horizontal pass, rounded to 8 bits as Pillow rounds it, then the vertical pass. float64 holds every
    fixed-point sum exactly.

    Args:
        images: (B, H, W) uint8, ``H, W <= size``.
        boxes: (B, 4) integer (top, left, height, width) boxes inside the images.

    Returns:
        (B, size, size) uint8.
    """
    _, height, width = images.shape
    rows = _coefficient_table(height, size)[boxes[:, 2], boxes[:, 0]]  # (B, size, H)
    cols = _coefficient_table(width, size)[boxes[:, 3], boxes[:, 1]]  # (B, size, W)
    pixels = torch.from_numpy(images.astype(np.float64))
    horizontal = _clip8(pixels @ cols.transpose(1, 2))  # (B, H, size)
    return _clip8(rows @ horizontal).to(torch.uint8)


def normalize_batch(images: torch.Tensor, mean, std) -> torch.Tensor:
    """(B, H, W) uint8 grey images -> (B, 1, H, W) float32, the values of torchvision's ``ToTensor`` then
    ``Normalize(mean, std)`` of each."""
    mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
    return images[:, None].to(torch.float32).div(255).sub_(mean.view(-1, 1, 1)).div_(std.view(-1, 1, 1))


class PretrainImages(Dataset):
    """Pre-training samples that carry their dataset index, each augmented from a seed of its own.

    Item ``i`` is ``(image, label, i)``: ``dataset[i]``'s PIL image (a dataset built without a transform) through
    MAE's augmentation, a random resized crop (:func:`crop_box`, bicubic, to ``img_size``) and a horizontal flip
    with probability 1/2, both drawn from ``random.Random(key)`` with ``key`` the (unsigned) bits of the image's
    :func:`emae.masking.image_key` of (``seed``, epoch, ``i``) in :data:`emae.masking.AUGMENT_STREAM`, then
    ``ToTensor`` and ``Normalize(mean, std)``. An image's view thus depends on the run seed, the epoch and its
    index only: not on the process, the loader worker or the order of reading.

    A loader's batch of :class:`FashionMNIST` images (an array in memory) no larger than ``img_size`` is
    augmented together (:meth:`__getitems__`: the same values as item by item, in a third of the time); other
    datasets go image by image through torchvision's PIL transforms.

    :meth:`set_epoch` must be called before each epoch's loader iterator is made: loader workers copy the
    dataset when they start, so a loader with persistent workers would keep the first epoch's.
    """

    ratio = (3 / 4, 4 / 3)  # torchvision's default aspect ratios, as MAE's crop uses

    def __init__(self, dataset: Dataset, img_size: int, mean, std, crop_min_scale: float, seed: int):
        self.dataset = dataset
        self.img_size = img_size
        self.scale = (crop_min_scale, 1.0)
        self.seed = seed
        self.epoch = 0
        self.mean, self.std = mean, std
        self.finish = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def draw(self, index: int, key: int, width: int, height: int) -> tuple[tuple[int, int, int, int], bool]:
        """The crop box (top, left, height, width) and the flip of image ``index``, from its ``key``."""
        rng = random.Random(key % 2**64)  # unsigned
        box = crop_box(width, height, self.scale, self.ratio, rng)
        return box, rng.random() < 0.5

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        img, label = self.dataset[index]
        box, flip = self.draw(index, image_key(self.seed, self.epoch, index, AUGMENT_STREAM), *get_image_size(img))
        img = resized_crop(img, *box, [self.img_size, self.img_size], InterpolationMode.BICUBIC)
        if flip:
            img = hflip(img)
        return self.finish(img), label, index

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int, int]]:
        """``[self[i] for i in indices]``, with Fashion-MNIST's images cropped, resized (:func:`resized_crops`),
        flipped and normalised as one batch."""
        if not isinstance(self.dataset, FashionMNIST) or max(self.dataset.images.shape[1:]) > self.img_size:
            return [self[i] for i in indices]
        images = self.dataset.images[indices]  # (B, H, W) uint8
        keys = image_keys(self.seed, self.epoch, torch.tensor(indices, dtype=torch.int64), AUGMENT_STREAM)
        boxes, flips = zip(*(self.draw(i, key, images.shape[2], images.shape[1])
                             for i, key in zip(indices, keys.tolist())))
        crops = resized_crops(images, np.array(boxes), self.img_size)
        crops = torch.where(torch.tensor(flips)[:, None, None], crops.flip(-1), crops)
        batch = normalize_batch(crops, self.mean, self.std)
        return [(image, int(self.dataset.targets[i]), i) for image, i in zip(batch, indices)]


class TFRandomResizedCrop(transforms.RandomResizedCrop):
    """The random resized crop of MAE's linear probe (its ``util/crop.py``, written to match the TF/TPU input
    code of BYOL): one draw of the box, no retries.

    The area (a fraction of the image's, uniform in ``scale``) and the aspect ratio (log-uniform in ``ratio``)
    are drawn once; the box's width and height are rounded and clipped to the image's, and its corner is
    uniform over the places where it fits. torchvision's crop instead draws up to 10 times until a box fits
    unclipped (else it takes a centre crop), which rejects the large boxes that do not fit and so favours
    small ones: on a 500x375 image with the default scale (0.08, 1) its boxes cover 0.44 of the image on
    average, these 0.52.

    Contract: ``get_params`` returns ``(top, left, height, width)`` of a box inside the image, at least one
    pixel on each side; it consumes torch's global generator as MAE's crop does (area, ratio, top, left).
    """

    @staticmethod
    def get_params(img, scale: tuple[float, float], ratio: tuple[float, float]) -> tuple[int, int, int, int]:
        width, height = get_image_size(img)
        area = width * height * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect = math.exp(torch.empty(1).uniform_(math.log(ratio[0]), math.log(ratio[1])).item())
        w = min(max(round(math.sqrt(area * aspect)), 1), width)
        h = min(max(round(math.sqrt(area / aspect)), 1), height)
        top = int(torch.randint(0, height - h + 1, size=(1,)).item())
        left = int(torch.randint(0, width - w + 1, size=(1,)).item())
        return top, left, h, w


class TrainTransform(transforms.Compose):
    """MAE's training augmentation: a random resized crop (bicubic), a horizontal flip with probability 1/2 (drawn
    from torch's global generator), ``ToTensor``, ``Normalize(mean, std)``; a torchvision ``Compose`` of those
    four. ``crop``: torchvision's crop (:class:`RandomResizedCrop`, its box drawn from Python's generator), as
    MAE's pre-training and fine-tuning use, or :class:`TFRandomResizedCrop`, as its linear probe does.

    :meth:`batch` computes the same for a batch of square grey 8-bit images no larger than ``img_size``, drawing
    the same random numbers in the same order (each image's box, then its flip): a batch equals its images
    through the ``Compose`` one by one."""

    def __init__(self, img_size: int, mean, std, crop_min_scale: float = 0.2,
                 crop: type[transforms.RandomResizedCrop] = RandomResizedCrop):
        self.img_size, self.mean, self.std = img_size, mean, std
        self.crop = crop(img_size, scale=(crop_min_scale, 1.0), interpolation=InterpolationMode.BICUBIC)
        self.flip = transforms.RandomHorizontalFlip()
        super().__init__([self.crop, self.flip, transforms.ToTensor(), transforms.Normalize(mean, std)])

    def batches(self, shape: tuple[int, ...]) -> bool:
        """Whether :meth:`batch` takes images of ``shape``: (H, W) square and at most ``img_size``."""
        return len(shape) == 2 and shape[0] == shape[1] <= self.img_size

    def batch(self, images: np.ndarray) -> torch.Tensor:
        """(B, H, W) uint8 images -> (B, 1, img_size, img_size), each as ``self(Image.fromarray(image))``."""
        template = Image.new("L", (images.shape[2], images.shape[1]))  # the size the crop draws its boxes in
        boxes, flips = [], []
        for _ in images:
            boxes.append(self.crop.get_params(template, self.crop.scale, self.crop.ratio))
            flips.append(bool(torch.rand(1) < self.flip.p))
        crops = resized_crops(images, np.array(boxes), self.img_size)
        crops = torch.where(torch.tensor(flips)[:, None, None], crops.flip(-1), crops)
        return normalize_batch(crops, self.mean, self.std)


def pretrain_transform(img_size: int, mean, std, crop_min_scale: float = 0.2,
                       crop: type[transforms.RandomResizedCrop] = RandomResizedCrop) -> TrainTransform:
    """MAE's training augmentation (:class:`TrainTransform`), drawn from the global generators. Pre-training
    itself draws the same augmentation per image from a seed of its own (:class:`PretrainImages`)."""
    return TrainTransform(img_size, mean, std, crop_min_scale, crop)


class EvalTransform(transforms.Compose):
    """Evaluation preprocessing (MAE's): resize the shorter side to ``img_size / crop_ratio`` (bicubic), centre
    crop ``img_size``, ``ToTensor``, ``Normalize(mean, std)``; a torchvision ``Compose`` of those four.
    :meth:`batch` computes the same for a batch of square grey 8-bit images no larger than the resize."""

    def __init__(self, img_size: int, mean, std, crop_ratio: float):
        self.img_size, self.mean, self.std = img_size, mean, std
        self.resize = int(round(img_size / crop_ratio))
        super().__init__([
            transforms.Resize(self.resize, interpolation=InterpolationMode.BICUBIC),
            transforms.CenterCrop(img_size),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ])

    def batches(self, shape: tuple[int, ...]) -> bool:
        """Whether :meth:`batch` takes images of ``shape``: (H, W) square and at most the resize, with a crop
        inside it."""
        return len(shape) == 2 and shape[0] == shape[1] <= self.resize and self.img_size <= self.resize

    def batch(self, images: np.ndarray) -> torch.Tensor:
        """(B, H, W) uint8 images -> (B, 1, img_size, img_size), each as ``self(Image.fromarray(image))``."""
        count, size = len(images), images.shape[1]
        resized = resized_crops(images, np.tile([0, 0, size, size], (count, 1)), self.resize)
        top = int(round((self.resize - self.img_size) / 2.0))  # torchvision's centre crop of a square
        return normalize_batch(resized[:, top:top + self.img_size, top:top + self.img_size], self.mean, self.std)


def eval_transform(img_size: int, mean, std, crop_ratio: float = 224 / 256) -> EvalTransform:
    """Evaluation preprocessing: resize to img_size / crop_ratio, centre crop, normalise (MAE's)."""
    return EvalTransform(img_size, mean, std, crop_ratio)


def build_dataset(kind: str, root: str | os.PathLike, train: bool, transform: Callable | None, in_chans: int = 3,
                  limit: int = 0) -> Dataset:
    """A dataset by kind: ``fashion-mnist``, ``imagefolder`` (``root/train``-style class folders) or ``images``,
    of (image, label) pairs: the PIL image through ``transform`` (as it is for None).

    For ``imagefolder``, ``root`` is the split folder itself (e.g. ``imagenet/train``).
    """
    mode = "L" if in_chans == 1 else "RGB"
    if kind == "fashion-mnist":
        dataset = FashionMNIST(root, train=train, transform=transform, limit=limit)
    elif kind == "imagefolder":
        if not Path(root).is_dir():
            raise EmaeError(f"{root}: data folder not found")
        try:
            dataset = datasets.ImageFolder(root, transform=transform, loader=functools.partial(open_image, mode=mode))
        except FileNotFoundError as e:
            raise EmaeError(f"{root}: not a folder of class folders with images: {e}") from None
    elif kind == "images":
        dataset = ImageFiles(root, transform=transform, mode=mode)
    else:
        raise EmaeError(f"unknown dataset kind {kind!r}; choose fashion-mnist, imagefolder or images")
    if limit and len(dataset) > limit and kind != "fashion-mnist":
        dataset = torch.utils.data.Subset(dataset, range(limit))
    return dataset


def generated_dataset(out: Path, settings: dict, command: str, write: Callable[[Path], dict]) -> dict:
    """The ``meta.json`` of the dataset ``emae data COMMAND`` keeps at ``out`` with these ``settings``.

    An ``out`` made with the same settings is kept as it is; any other existing ``out`` but an empty folder is an
    error and is left untouched. Otherwise ``write(folder)`` fills a folder beside ``out`` and returns its meta
    (without the settings), which is saved with the settings as ``meta.json`` before the folder is renamed into
    place, so that ``out`` holds a whole dataset or none.
    """
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        return _existing_meta(out, settings, command)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        meta = dict(write(tmp), settings=settings)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            out.rmdir()  # the empty folder the dataset replaces
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def _existing_meta(out: Path, settings: dict, command: str) -> dict:
    meta_file = out / META_FILE
    if not meta_file.is_file():
        raise EmaeError(f"{out}: exists and is not a dataset made by emae data {command} (no {META_FILE}); "
                        f"choose another --out")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except ValueError:
        raise EmaeError(f"{meta_file}: not valid JSON; remove the folder and make the dataset again") from None
    if not isinstance(meta, dict) or meta.get("settings") != settings:
        raise EmaeError(f"{out}: already holds a dataset made with other settings "
                        f"({meta.get('settings') if isinstance(meta, dict) else meta}); choose another --out or "
                        f"remove it")
    return meta
