"""Fashion-MNIST's images preprocessed a batch at a time (emae.data.resized_crops, PretrainImages.__getitems__,
EvalTransform.batch, TrainTransform.batch) are the values torchvision's per-image PIL transforms give."""
import random

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset
from torchvision.transforms import InterpolationMode
from torchvision.transforms.functional import resized_crop

from emae.data import (FASHION_MNIST_DIR, FashionMNIST, PretrainImages, RandomResizedCrop, TFRandomResizedCrop,
                       bicubic_coefficients, collate_counting_skipped, eval_transform, pretrain_transform,
                       resized_crops)
from emae.errors import EmaeError


@pytest.mark.parametrize("size", [28, 32, 57])
def test_batched_bicubic_crops_are_pillow_s_for_every_box_size(size):
    """resized_crops gives the bytes of torchvision's resized_crop of a PIL image (Pillow's bicubic) for every
    crop height and width of a 28x28 image, each at a random place, upsampled to ``size``."""
    rng = np.random.default_rng(size)
    shapes = [(h, w) for h in range(1, 29) for w in range(1, 29)]
    boxes = np.array([(rng.integers(0, 29 - h), rng.integers(0, 29 - w), h, w) for h, w in shapes])
    images = rng.integers(0, 256, (len(boxes), 28, 28), dtype=np.uint8)
    images[:, ::3] = 255  # saturated rows: the clipping of each pass
    ours = resized_crops(images, boxes, size)
    theirs = [np.array(resized_crop(Image.fromarray(img, mode="L"), *map(int, box), [size, size],
                                    InterpolationMode.BICUBIC)) for img, box in zip(images, boxes)]
    assert ours.dtype == torch.uint8 and ours.shape == (len(boxes), size, size)
    assert torch.equal(ours, torch.from_numpy(np.stack(theirs)))
    with pytest.raises(EmaeError, match="upsamples: a span of 28 pixels exceeds the output's 16"):
        bicubic_coefficients(np.array([0]), np.array([28]), 28, 16)


@pytest.mark.fmnist
def test_a_loader_s_batch_of_fashion_mnist_is_the_images_augmented_one_by_one(monkeypatch):
    """A DataLoader batch at 32 px (PretrainImages.__getitems__: the batched crops, with torchvision's per-image
    crop made to fail) holds the same tensors, labels and indices as the images read one by one through
    torchvision's PIL transforms, in a shuffled order; at 16 px (a downsampling) the batch takes the per-image path."""
    for size in (32, 16):
        images = PretrainImages(FashionMNIST(FASHION_MNIST_DIR, limit=300), size, (0.286,), (0.353,), 0.2, seed=5)
        images.set_epoch(2)
        order = torch.randperm(300, generator=torch.Generator().manual_seed(0)).tolist()
        loader = DataLoader(images, batch_size=100, sampler=order, collate_fn=collate_counting_skipped)
        with monkeypatch.context() as patch:
            if size == 32:
                patch.setattr("emae.data.resized_crop", lambda *args: pytest.fail("a per-image crop in a batch"))
            batches = list(loader)
        for batch, (imgs, labels, index, skipped) in enumerate(batches):
            one_by_one = [images[i] for i in order[100 * batch: 100 * (batch + 1)]]
            assert torch.equal(imgs, torch.stack([img for img, _, _ in one_by_one])) and skipped == 0
            assert labels.tolist() == [label for _, label, _ in one_by_one]
            assert index.tolist() == order[100 * batch: 100 * (batch + 1)]


@pytest.mark.fmnist
@pytest.mark.parametrize("size, crop_ratio, batched", [(32, 1.0, True), (32, 224 / 256, True), (28, 1.0, True),
                                                      (24, 224 / 256, False)])
def test_evaluation_images_preprocessed_as_a_batch_are_the_images_one_by_one(size, crop_ratio, batched,
                                                                              monkeypatch):
    """FashionMNIST.__getitems__ through an EvalTransform (resize, centre crop, normalise), as a validation Subset
    reads it: the tensors and labels of the images one by one; a resize below 28 px goes image by image."""
    dataset = FashionMNIST(FASHION_MNIST_DIR, train=False, limit=400,
                           transform=eval_transform(size, (0.286,), (0.353,), crop_ratio))
    assert dataset.transform.batches((28, 28)) is batched
    split = Subset(dataset, list(range(399, 0, -3)))
    with monkeypatch.context() as patch:
        if batched:  # the per-image path made to fail
            patch.setattr(type(dataset.transform), "__call__", lambda *args: pytest.fail("a per-image transform"))
        batch = split.__getitems__(list(range(len(split))))
    one_by_one = [split[i] for i in range(len(split))]
    assert all(img.shape == (1, size, size) for img, _ in batch)
    assert all(torch.equal(a, b) and la == lb for (a, la), (b, lb) in zip(batch, one_by_one))


@pytest.mark.fmnist
@pytest.mark.parametrize("crop", [RandomResizedCrop, TFRandomResizedCrop])
@pytest.mark.parametrize("size, scale, batched", [(32, 0.2, True), (32, 1.0, True), (28, 0.08, True),
                                                 (24, 0.2, False)])
def test_training_images_augmented_as_a_batch_are_the_images_one_by_one(crop, size, scale, batched, monkeypatch):
    """FashionMNIST.__getitems__ through a TrainTransform (the fine-tune's and the full probe's random resized crop,
    flip, normalise) draws the same boxes and flips as the Compose image by image, so from the same seeds it gives
    the same tensors; a crop below 28 px goes image by image."""
    dataset = FashionMNIST(FASHION_MNIST_DIR, limit=200,
                           transform=pretrain_transform(size, (0.286,), (0.353,), scale, crop=crop))
    assert dataset.transform.batches((28, 28)) is batched
    indices = list(range(199, 0, -2))
    torch.manual_seed(3), random.seed(3)
    with monkeypatch.context() as patch:
        if batched:  # the per-image path made to fail
            patch.setattr(type(dataset.transform), "__call__", lambda *args: pytest.fail("a per-image transform"))
        batch = dataset.__getitems__(indices)
    torch.manual_seed(3), random.seed(3)
    one_by_one = [dataset[i] for i in indices]
    assert all(img.shape == (1, size, size) for img, _ in batch)
    assert all(torch.equal(a, b) and la == lb for (a, la), (b, lb) in zip(batch, one_by_one))
