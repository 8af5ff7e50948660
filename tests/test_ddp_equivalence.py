"""DDP computes what one process computes: each image's crop, flip and mask are drawn from (seed, epoch, index),
so 2 processes of batch B / 2 make the updates of 1 process of batch B (docs/reliability.md)."""
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision import transforms

from emae.checkpoint import load_checkpoint
from emae.config import PretrainConfig
from emae.data import (FASHION_MNIST_DIR, FashionMNIST, ImageFiles, PretrainImages, SkipBadImages,
                       collate_counting_skipped, crop_box)
from emae.engine import train

TERMS = ("loss", "pixel_loss", "consistency_loss")


def log_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]


@pytest.mark.fmnist
@pytest.mark.slow
def test_two_processes_of_half_the_batch_compute_what_one_process_computes(tmp_path):
    """Fashion-MNIST, 128 images, EMAE, 2 epochs of 4 updates: one process of batch 32 (with 2 loader workers)
    against torchrun's 2 processes of batch 16 (without): the same losses at every step and the same weights."""
    cfg = PretrainConfig(method="emae", subset=128, epochs=2, warmup_epochs=1, blr=1e-3, seed=3, batch_size=32,
                         num_workers=2, output_dir=str(tmp_path / "one"))
    train(cfg)
    shared = {k: v for k, v in cfg.to_dict().items() if k not in ("batch_size", "num_workers", "output_dir")}
    (tmp_path / "config.json").write_text(json.dumps(shared))  # every other field as the one process's
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           "-m", "emae", "pretrain", "--config", str(tmp_path / "config.json"), "--batch-size", "16",
           "--num-workers", "0", "--output-dir", str(tmp_path / "two")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = log_lines(tmp_path / "one"), log_lines(tmp_path / "two")
    assert [e["step"] for e in one] == [e["step"] for e in two] == list(range(1, 9))
    for a, b in zip(one, two):
        assert b["lr"] == pytest.approx(a["lr"], rel=1e-12)
        for term in TERMS:
            assert b[term] == pytest.approx(a[term], rel=1e-5, abs=1e-7), (a["step"], term)
    weights = [load_checkpoint(tmp_path / run / "checkpoint.pth")["model"] for run in ("one", "two")]
    scale = max(w.abs().max().item() for w in weights[0].values())
    for name, w in weights[0].items():
        diff = weights[1][name] - w
        if name.endswith("attn.qkv.bias"):  # the key bias: softmax ignores it, so its gradient is 0 but for
            q, _, v = diff.chunk(3)        # rounding, which Adam scales to lr-sized steps in any two runs
            diff = torch.cat([q, v])
        assert diff.abs().max() <= 1e-5 * scale, name


def _box_stats(draw, width: int, height: int, n: int) -> tuple[float, float]:
    boxes = [draw() for _ in range(n)]
    areas = [h * w / (width * height) for _, _, h, w in boxes]
    return sum(areas) / n, sum(w / h for _, _, h, w in boxes) / n


def test_the_seeded_crop_draws_torchvision_s_boxes():
    """crop_box is torchvision's RandomResizedCrop rule: the same mean area and aspect on a 500x375 image (where
    its retries reject large boxes) and on a 28x28 one, and every box lies inside the image."""
    for width, height, scale in ((500, 375, (0.08, 1.0)), (28, 28, (0.2, 1.0))):
        image = torch.zeros(3, height, width)
        ratio = (3 / 4, 4 / 3)
        torch.manual_seed(0)
        ours, theirs = random.Random(0), transforms.RandomResizedCrop(32, scale=scale)
        mean_ours = _box_stats(lambda: crop_box(width, height, scale, ratio, ours), width, height, 4000)
        mean_theirs = _box_stats(lambda: theirs.get_params(image, scale, list(ratio)), width, height, 4000)
        assert mean_ours == pytest.approx(mean_theirs, abs=0.02)
        for top, left, h, w in (crop_box(width, height, scale, ratio, ours) for _ in range(500)):
            assert 0 <= top <= height - h and 0 <= left <= width - w and h >= 1 and w >= 1
    # a strip too narrow for any box of the ratios: after 10 misses, the centre crop clamped to 3:4
    assert crop_box(10, 100, (0.99, 1.0), (3 / 4, 4 / 3), random.Random(0)) == (43, 0, 13, 10)


@pytest.mark.fmnist
def test_an_image_s_view_depends_on_seed_epoch_and_index_only():
    images = PretrainImages(FashionMNIST(FASHION_MNIST_DIR, limit=16), 32, (0.286,), (0.353,), 0.2, seed=0)
    first = [images[i] for i in range(16)]
    assert all(index == i and img.shape == (1, 32, 32) for i, (img, _, index) in enumerate(first))
    assert all(torch.equal(images[i][0], first[i][0]) for i in reversed(range(16)))  # any order, any reader
    images.set_epoch(1)
    second = [images[i][0] for i in range(16)]
    assert sum(not torch.equal(a, b) for (a, _, _), b in zip(first, second)) >= 14
    other = PretrainImages(FashionMNIST(FASHION_MNIST_DIR, limit=16), 32, (0.286,), (0.353,), 0.2, seed=1)
    assert sum(not torch.equal(a, other[i][0]) for i, (a, _, _) in enumerate(first)) >= 14
    torch.manual_seed(0)
    state = torch.get_rng_state()
    images[3]
    assert torch.equal(torch.get_rng_state(), state)  # torch's global generator is not drawn from


def test_skipped_images_keep_the_indices_of_the_readable_ones(image_folder):
    """The image_folder fixture's 050.png and 060.png are damaged: a batch of 40..63 collates 22 images, their
    indices, and the count of the 2 skipped."""
    images = SkipBadImages(PretrainImages(ImageFiles(image_folder, mode="L"), 32, (0.286,), (0.353,), 0.2, seed=0))
    with pytest.warns(UserWarning, match=r"skipped: .*0[56]0.png"):
        imgs, labels, index, skipped = collate_counting_skipped([images[i] for i in range(40, 64)])
    assert imgs.shape == (22, 1, 32, 32) and skipped == 2
    assert index.tolist() == [i for i in range(40, 64) if i not in (50, 60)]
    plain = collate_counting_skipped([(torch.zeros(1, 4, 4), 0), None])  # (image, label) samples, as before
    assert [type(x) for x in plain] == [torch.Tensor, torch.Tensor, int] and plain[2] == 1
