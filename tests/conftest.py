"""Fixtures and markers shared by the test modules.

Markers (registered in ``pyproject.toml``): ``fmnist`` (needs Fashion-MNIST in ``FASHION_MNIST_DIR``),
``detectron2`` and ``mmseg`` (need the framework), ``slow`` (trains or evaluates for more than a few seconds;
``pytest -m "not slow"`` leaves them out). A test whose data or framework is missing is skipped with the
reason; the set-up installs all of them, so in CI none is skipped.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from PIL import Image

from emae.checkpoint import save_checkpoint
from emae import progress
from emae.config import PretrainConfig, preset_config
from emae.data import FASHION_MNIST_DIR
from emae.models import build_model

# marker -> (is it available?, the reason a test is skipped without it)
REQUIREMENTS = {
    "fmnist": (lambda: Path(FASHION_MNIST_DIR).is_dir(), f"Fashion-MNIST is not installed ({FASHION_MNIST_DIR})"),
    "detectron2": (lambda: importlib.util.find_spec("detectron2") is not None, "detectron2 is not installed"),
    "mmseg": (lambda: importlib.util.find_spec("mmseg") is not None, "mmsegmentation is not installed"),
}


def pytest_collection_modifyitems(config, items):
    available = {name: check() for name, (check, _) in REQUIREMENTS.items()}
    for item in items:
        for name, (_, reason) in REQUIREMENTS.items():
            if item.get_closest_marker(name) and not available[name]:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def tiny_config() -> PretrainConfig:
    """The default pre-training config: the tiny Fashion-MNIST ViT (``vit_tiny_fmnist``, 32 px, 1 channel)."""
    return PretrainConfig(epochs=1)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_config) -> Path:
    """A randomly initialised (seed 0) ``tiny_config`` MAE in the layout of ``emae pretrain``'s checkpoints."""
    torch.manual_seed(0)
    model = build_model(tiny_config.arch, tiny_config.img_size, tiny_config.in_chans)
    path = tmp_path_factory.mktemp("tiny") / "checkpoint.pth"
    save_checkpoint({"model": model.state_dict(), "config": tiny_config.to_dict()}, path)
    return path


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """96 Fashion-MNIST images as PNG files, two of them damaged: 050.png truncated, 060.png not an image."""
    from emae.data import FashionMNIST

    if not REQUIREMENTS["fmnist"][0]():
        pytest.skip(REQUIREMENTS["fmnist"][1])
    root = tmp_path_factory.mktemp("images")
    data = FashionMNIST(FASHION_MNIST_DIR, limit=96)
    for i in range(96):
        Image.fromarray(data.images[i]).save(root / f"{i:03d}.png")
    good = (root / "050.png").read_bytes()
    (root / "050.png").write_bytes(good[: len(good) // 3])  # truncated
    (root / "060.png").write_bytes(b"not an image at all")
    return root


@pytest.fixture(scope="session")
def record() -> dict:
    """A valid record as a plain dict (one line of a records file), to vary field by field."""
    return {"method": "mae", "arch": "vit_tiny_fmnist", "pretrain_epochs": 1, "pretrain_data": "fashion-mnist",
            "protocol": "knn", "metric": "top1", "value": 80.0, "dataset": "fashion-mnist", "seed": 0,
            "checkpoint_sha256": "", "command": "emae", "config": {}, "git_commit": "x", "hardware": "cpu",
            "wall_time_s": 1.0, "date": "2026-01-01"}


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised (seed 0) MAE of the ``fmnist-small`` preset (``vit_tiny_p8_fmnist``: 8-px patches)
    in the layout of ``emae pretrain``'s checkpoints."""
    config = preset_config("fmnist-small")
    torch.manual_seed(0)
    model = build_model(config.arch, config.img_size, config.in_chans)
    path = tmp_path_factory.mktemp("small") / "checkpoint.pth"
    save_checkpoint({"model": model.state_dict(), "config": config.to_dict()}, path)
    return path


@pytest.fixture
def reports(monkeypatch) -> list[tuple]:
    """Every ``emae.progress.report`` call, as (done, total, unit, phase)."""
    calls = []
    monkeypatch.setattr(progress, "report", lambda done, total, unit="steps", phase="": calls.append(
        (done, total, unit, phase)))
    return calls
