"""The pre-training config: one dataclass, named presets, and its command-line flags.

A run's config is resolved as defaults < preset < ``--config`` file (YAML or JSON) < explicit flags, and
saved as ``config.json`` beside its checkpoints and inside every checkpoint.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from emae import settings
from emae.data import FASHION_MNIST_DIR, FASHION_MNIST_MEAN, FASHION_MNIST_STD, IMAGENET_MEAN, IMAGENET_STD
from emae.errors import EmaeError
from emae.masking import visible_count
from emae.methods import get_method
from emae.models import get_arch
from emae.monitor import K, MONITORS


@dataclass
class PretrainConfig(settings.CommandConfig):
    # method
    method: str = "emae"  # mae, emae, parallel, random-k, complementary, consistency
    parts: int = 4  # K: parts per image (ignored by mae, 2 views for complementary)
    mask_ratio: float = 0.75  # mae, random-k and complementary; parallel methods use 1 - 1/K
    pixel_weight: float | None = None  # None: the method's own weight
    consistency_weight: float | None = None
    norm_pix_loss: bool = True
    # model
    arch: str = "vit_tiny_fmnist"
    img_size: int = 32
    in_chans: int = 1
    # data
    dataset: str = "fashion-mnist"  # fashion-mnist, imagefolder (class folders), images (any image tree)
    data: str = FASHION_MNIST_DIR
    data_name: str = "fashion-mnist"  # the pre-training data's name in result records (imagenet-1k, coco, ...)
    subset: int = 0  # use only the first N training images (0: all)
    crop_min_scale: float = 0.2
    mean: tuple[float, ...] = FASHION_MNIST_MEAN
    std: tuple[float, ...] = FASHION_MNIST_STD
    # loader processes; 0 loads in the training process: Fashion-MNIST's batches are augmented as one product
    # (emae.data.PretrainImages) in ~8 ms, and a worker would take a core from the model's threads (fmnist-small
    # on 2 cores: 2070 images/s for MAE in the training process, 1737 with one worker)
    num_workers: int = 0
    skip_bad_images: bool = False  # count and skip unreadable images instead of stopping
    # optimisation
    epochs: int = 10  # 0: write the untrained backbone (the initialised model) and stop
    warmup_epochs: int = 1
    # > 0: train for this many seconds (MAE's wall time, for EMAE at equal time), at most epochs' worth, the
    # epochs' schedule (warm-up share and cosine) following the clock (emae.engine.TimeBudget)
    time_budget_s: float = 0.0
    batch_size: int = 256  # per process
    effective_batch: int = 0  # 0: batch_size x processes; larger values accumulate gradients
    blr: float = 1.5e-4  # lr = blr x effective batch / 256
    lr: float = 0.0  # absolute lr; 0: from blr
    min_lr: float = 0.0
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    clip_grad: float = 0.0  # 0: no clipping
    # run
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda
    amp: str = "auto"  # auto (bf16 on a supporting GPU, else none), bf16, fp16, none
    compile: bool = False  # torch.compile the forward pass (docs/performance.md)
    dist_timeout: int = 600  # seconds a collective may wait for a peer before the run fails
    output_dir: str = "runs/pretrain"
    save_every: int = 1  # write checkpoint.pth every N epochs (and after the last)
    keep_every: int = 0  # also keep checkpoint-EPOCH.pth every N epochs (0: never)
    log_every: int = 1  # steps between lines in log.txt
    # the online monitor (emae.monitor): kNN top-1 of the encoder on a fixed held-out subset as it trains
    monitor: str = ""  # "" (none), knn (Fashion-MNIST only) or auto (knn on Fashion-MNIST, none on other data)
    monitor_every: int = 0  # updates between points (0: at the end of every epoch); always at the start and end
    monitor_images: int = 750  # images in each of the monitor's bank and query set
    preset: str = "fmnist-tiny"

    @property
    def method_spec(self):
        return get_method(self.method)

    @property
    def num_patches(self) -> int:
        return (self.img_size // get_arch(self.arch).patch_size) ** 2

    def loss_weights(self) -> tuple[float, float]:
        spec = self.method_spec
        pixel = spec.pixel_weight if self.pixel_weight is None else self.pixel_weight
        consistency = spec.consistency_weight if self.consistency_weight is None else self.consistency_weight
        return pixel, consistency

    def num_parts(self) -> int:
        """K as the model sees it: 1 for mae, 2 for complementary, ``parts`` otherwise."""
        return {"random": 1, "complementary": 2}.get(self.method_spec.masking, self.parts)

    def validate(self) -> "PretrainConfig":
        spec = self.method_spec
        arch = get_arch(self.arch)
        if self.img_size % arch.patch_size:
            raise EmaeError(f"img_size={self.img_size} is not divisible by the patch size {arch.patch_size} "
                            f"of {self.arch}")
        if spec.masking == "parallel" and (self.parts < 2 or self.num_patches % self.parts):
            raise EmaeError(f"parts K={self.parts} must be >= 2 and divide the number of patches "
                            f"N={self.num_patches} ({self.img_size}px / patch {arch.patch_size})")
        if spec.masking == "random-k" and self.parts < 2:
            raise EmaeError(f"random-k needs parts K >= 2, got {self.parts}")
        if spec.masking != "parallel":
            visible_count(self.num_patches, self.mask_ratio)
        if self.dataset not in ("fashion-mnist", "imagefolder", "images"):
            raise EmaeError(f"unknown dataset {self.dataset!r}; choose fashion-mnist, imagefolder or images")
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise EmaeError(f"mean/std need {self.in_chans} values (in_chans), got {self.mean} / {self.std}")
        if self.amp not in ("auto", "bf16", "fp16", "none"):
            raise EmaeError(f"amp must be auto, bf16, fp16 or none, got {self.amp!r}")
        if self.epochs < 0:
            raise EmaeError(f"epochs must be >= 0 (0: the untrained backbone), got {self.epochs}")
        for name in ("batch_size", "save_every", "log_every"):
            if getattr(self, name) < 1:
                raise EmaeError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.epochs and not 0 <= self.warmup_epochs <= self.epochs:
            raise EmaeError(f"warmup_epochs={self.warmup_epochs} must be within [0, epochs={self.epochs}]")
        if not self.time_budget_s >= 0:
            raise EmaeError(f"time_budget_s must be >= 0 seconds (0: no budget), got {self.time_budget_s}")
        if self.monitor not in MONITORS:
            raise EmaeError(f"monitor must be '' (none), knn or auto, got {self.monitor!r}")
        if self.monitor_every < 0:
            raise EmaeError(f"monitor_every must be >= 0 updates (0: every epoch), got {self.monitor_every}")
        if self.monitor and self.monitor_images < K:
            raise EmaeError(f"monitor_images must be >= k={K} (the kNN monitor's neighbours), "
                            f"got {self.monitor_images}")
        return self


_IMAGENET_DATA = dict(dataset="imagefolder", data_name="imagenet-1k", img_size=224, in_chans=3, mean=IMAGENET_MEAN,
                      std=IMAGENET_STD, num_workers=10, batch_size=64, effective_batch=4096, blr=1.5e-4, warmup_epochs=40,
                      save_every=1, keep_every=100, log_every=20)

PRESETS: dict[str, dict] = {
    # Fashion-MNIST at 32 px, 4 px patches (N = 64): a quick run in minutes on a 2-core CPU (make run); too short
    # for pre-training to beat the untrained backbone under the linear probe (docs/small-scale.md). Its kNN monitor
    # (docs/small-scale.md) takes a point an epoch (64 updates) on 250 + 250 images: 64 tokens cost 4x as much
    "fmnist-tiny": dict(subset=16384, epochs=4, warmup_epochs=1, blr=1e-3, monitor="auto",
                        monitor_every=0, monitor_images=250),
    # Fashion-MNIST at 32 px, 8 px patches (N = 16), all 60k images: the small-scale regime where MAE clearly
    # beats the untrained backbone (docs/small-scale.md); the study's Table XII runs 1/4, 1/2 and all of its epochs.
    # Its kNN monitor takes a point every half epoch (234 updates an epoch) on 750 + 750 images, for under 5 % of
    # the pre-training's time
    "fmnist-small": dict(arch="vit_tiny_p8_fmnist", subset=0, epochs=4, warmup_epochs=1, blr=1e-3,
                         monitor="auto", monitor_every=117, monitor_images=750),
    # the paper's ImageNet-1K recipes (MAE's, Section IV-B): 800 epochs, effective batch 4096
    "imagenet-vit-b": dict(_IMAGENET_DATA, arch="vit_base_patch16", data="data/imagenet/train", epochs=800),
    "imagenet-vit-b-300": dict(_IMAGENET_DATA, arch="vit_base_patch16", data="data/imagenet/train", epochs=300),
    "imagenet-vit-l": dict(_IMAGENET_DATA, arch="vit_large_patch16", data="data/imagenet/train", epochs=800),
    "imagenet-vit-h": dict(_IMAGENET_DATA, arch="vit_huge_patch14", data="data/imagenet/train", epochs=800),
    "imagenet-vit-s": dict(_IMAGENET_DATA, arch="vit_small_patch16", data="data/imagenet/train", epochs=300),
    # COCO train2017 and OpenImages as unlabelled image trees (Tables VIII, IX)
    "coco-vit-b": dict(_IMAGENET_DATA, arch="vit_base_patch16", dataset="images", data="data/coco/train2017",
                       data_name="coco",
                       epochs=1000, keep_every=1000),
    "openimages-vit-b": dict(_IMAGENET_DATA, arch="vit_base_patch16", dataset="images",
                             data="data/openimages/train", data_name="openimages", epochs=800),
}


def preset_config(name: str) -> PretrainConfig:
    if name not in PRESETS:
        raise EmaeError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PretrainConfig.from_dict(dict(PRESETS[name], preset=name), source=f"preset {name}")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and one ``--flag`` per config field (``--preset`` among them)."""
    settings.add_arguments(parser, PretrainConfig, {"preset": f"named preset (default fmnist-tiny); one of "
                                                              f"{', '.join(sorted(PRESETS))}"})


def explicit_values(args: argparse.Namespace) -> dict:
    """The config fields given on the command line."""
    return settings.given_values(PretrainConfig, args)


def resolve_config(args: argparse.Namespace) -> PretrainConfig:
    """defaults < preset < config file < explicit flags, validated."""
    merged = settings.resolve(PretrainConfig, args, lambda name: preset_config(name).to_dict())
    return PretrainConfig.from_dict(merged).validate()
