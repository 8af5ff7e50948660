"""Named settings of each evaluation: the paper's ImageNet-1K recipes (MAE's) and quick Fashion-MNIST runs.

``PRESETS[name][protocol]`` holds the config values a preset sets for ``protocol`` (``linprobe``,
``finetune`` or ``knn``); everything else keeps its dataclass default, which is MAE's recipe.

Every protocol chooses on a validation split held out of the training images and reports the test split,
evaluated once with the chosen setting (:func:`evaluation.common.eval_datasets`): for Fashion-MNIST the validation
split is the last ``val_size`` (10k) of the 60k training images, ``train[50000:60000]``, and the test split the 10k
test images; for class folders (ImageNet) the folder ``DATA/VAL_SPLIT`` where ``val_split`` names one, else the
last ``val_fraction`` (1 %) of each class's images of ``DATA/train``, and the test split ``DATA/val``. A
``train_limit`` takes the first training images before the validation split, and one that would reach into it is
an error.

- ``fmnist``: Fashion-MNIST (grey 28 px resized to the checkpoint's size), minutes on a 2-core CPU: kNN (k chosen
  from 10, 20, 100, 200) and the fast linear probe (a grid of read-outs x learning rates) on the cached features
  of the first 20k training images, chosen on the 10k validation images and scored on the 10k test images (the
  probe evaluated every 10 epochs), with few-shot kNN and probes on 1, 5, 10 and 25 training images per class
  (3 draws each); kNN's read-out is the global average of the patch tokens (MAE's fine-tuning read-out, which
  beats the cls token for pre-trained backbones in the sweep of docs/small-scale.md); and one fine-tuning epoch
  (468 updates of 64) on 30k images.
  That fine-tune is MAE's recipe in shape (AdamW, layer decay 0.75, warm-up for a tenth of the epoch, then
  cosine; global average pooling) sized for a quick signal: mixup, cutmix, RandAugment and random erasing,
  made for 100 epochs, hold back learning in so few updates, so they are off and the crops take the whole
  image (flips only). Its top-1 grows with the number of updates, so batch 64 at base lr 1e-2 (lr 2.5e-3)
  learns most for its CPU time, and 30k images lift it above the same backbone's linear probe
  (docs/evaluation.md). The images are read in the evaluating process (no loader workers), a batch at a time
  (:class:`emae.data.EvalTransform`, :class:`emae.data.TrainTransform`).
- ``fmnist-full``: ``fmnist`` on all 50k training images besides the validation split (the fine-tune on them too).
- ``imagenet-vit-b`` / ``-l`` / ``-h``: ImageNet-1K (``DATA/train`` and ``DATA/val`` class folders), 224 px,
  MAE's linear-probe recipe (LARS, base lr 0.1, batch 16384, 90 epochs for ViT-B and 50 for ViT-L/H, 10
  warm-up) and fine-tune recipe (batch 1024, base lr 5e-4 / 1e-3 / 1e-3, layer decay 0.65 / 0.75 / 0.75,
  drop path 0.1 / 0.2 / 0.3, 100 / 50 / 50 epochs, 5 warm-up).
"""
from __future__ import annotations

from emae.data import FASHION_MNIST_DIR, FASHION_MNIST_MEAN, FASHION_MNIST_STD, IMAGENET_MEAN, IMAGENET_STD
from emae.errors import EmaeError
from evaluation.readouts import READOUTS

PROTOCOLS = ("linprobe", "finetune", "knn")

_FMNIST = dict(dataset="fashion-mnist", data=FASHION_MNIST_DIR, eval_name="fashion-mnist test", mean=FASHION_MNIST_MEAN,
               std=FASHION_MNIST_STD, crop_ratio=1.0, num_workers=0, val_size=10000)
_SHOTS = dict(shots=(1, 5, 10, 25), shot_subsets=3)
_IMAGENET = dict(dataset="imagefolder", data="data/imagenet", eval_name="ImageNet-1K val", img_size=224,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_ratio=224 / 256, num_workers=10)


def _imagenet(linprobe_epochs: int, finetune: dict) -> dict[str, dict]:
    return {
        "linprobe": dict(_IMAGENET, epochs=linprobe_epochs, warmup_epochs=10, batch_size=1024,
                         effective_batch=16384, blrs=(0.1,)),
        "finetune": dict(_IMAGENET, warmup_epochs=5, batch_size=64, effective_batch=1024, **finetune),
        "knn": dict(_IMAGENET, batch_size=256),
    }


def _fmnist(train_limit: int, finetune_limit: int) -> dict[str, dict]:
    """The Fashion-MNIST presets: the first ``train_limit`` training images for kNN and the probe and
    ``finetune_limit`` for the fine-tune (0: all 50k besides the validation split)."""
    return {
        "linprobe": dict(_FMNIST, **_SHOTS, fast=True, train_limit=train_limit, epochs=100, warmup_epochs=10,
                         batch_size=512, effective_batch=1024, blrs=(0.1, 0.3, 1.0, 3.0, 10.0), readouts=READOUTS,
                         global_pool="avg", eval_every=10),
        "finetune": dict(_FMNIST, train_limit=finetune_limit, epochs=1, warmup_epochs=0.1, batch_size=64,
                         effective_batch=64, blr=1e-2, layer_decay=0.75, drop_path=0.0, crop_min_scale=1.0, mixup=0.0,
                         cutmix=0.0, auto_augment="", reprob=0.0),
        "knn": dict(_FMNIST, **_SHOTS, train_limit=train_limit, batch_size=512, global_pool="avg",
                    ks=(10, 20, 100, 200)),
    }


PRESETS: dict[str, dict[str, dict]] = {
    "fmnist": _fmnist(20000, 30000),
    "fmnist-full": _fmnist(0, 0),
    "imagenet-vit-b": _imagenet(90, dict(epochs=100, blr=5e-4, layer_decay=0.65, drop_path=0.1)),
    "imagenet-vit-l": _imagenet(50, dict(epochs=50, blr=1e-3, layer_decay=0.75, drop_path=0.2)),
    "imagenet-vit-h": _imagenet(50, dict(epochs=50, blr=1e-3, layer_decay=0.75, drop_path=0.3)),
}


def preset_values(name: str, protocol: str) -> dict:
    """The config values preset ``name`` sets for ``protocol``."""
    if name not in PRESETS:
        raise EmaeError(f"unknown evaluation preset {name!r}; choose one of {sorted(PRESETS)}")
    return dict(PRESETS[name][protocol], preset=name)
