"""``emae eval knn``: weighted k-nearest-neighbour classification of frozen features (DINO's protocol).

Features (the cls token by default) are L2-normalised; each validation image votes with its k most
cosine-similar training images, each vote weighted by ``exp(similarity / T)`` (k = 20, T = 0.07). A quick
signal of a backbone's quality, without training anything.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from emae.errors import EmaeError
from emae.records import print_records
from evaluation.common import EvalConfig, add_config_arguments, resolve_config, start_run, write_run_records
from evaluation.features import evaluation_features


@dataclass
class KnnConfig(EvalConfig):
    k: int = 20
    temperature: float = 0.07
    features_dir: str = ""  # where frozen features are cached ("": the output folder); shareable with linprobe

    protocol = "knn"
    takes_pixels = True

    def validate(self) -> "KnnConfig":
        super().validate()
        if self.k < 1 or self.temperature <= 0:
            raise EmaeError(f"k must be >= 1 and temperature > 0, got k={self.k}, temperature={self.temperature}")
        return self


def knn_scores(train_features: Tensor, train_labels: Tensor, features: Tensor, num_classes: int, k: int = 20,
               temperature: float = 0.07, chunk: int = 1024) -> Tensor:
    """Class scores of each query from its k nearest training features (cosine similarity).

    Args:
        train_features: (N, D); train_labels: (N,) in [0, num_classes).
        features: (M, D) queries.
    Returns:
        (M, num_classes) sums of ``exp(similarity / temperature)`` over each query's neighbours per class.
    """
    if k > len(train_features):
        raise EmaeError(f"k={k} is larger than the {len(train_features)} training images")
    bank = F.normalize(train_features, dim=1)
    scores = []
    for start in range(0, len(features), chunk):
        query = F.normalize(features[start:start + chunk], dim=1)
        similarity, index = (query @ bank.T).topk(k, dim=1)  # (m, k)
        votes = torch.zeros(len(query), num_classes, dtype=bank.dtype, device=bank.device)
        scores.append(votes.scatter_add_(1, train_labels[index], (similarity / temperature).exp()))
    return torch.cat(scores)


def run(cfg: KnnConfig):
    """Run (or, when its record exists, skip) a kNN evaluation; returns its records."""
    ev, done = start_run(cfg)
    if done:
        print_records(done, " (already done: the record exists)")
        return done
    data = evaluation_features(ev, cfg.features_dir)
    (train_x, train_y), (val_x, val_y) = data.train, data.val
    scores = knn_scores(train_x.to(ev.device), train_y.to(ev.device), val_x.to(ev.device), data.num_classes,
                        cfg.k, cfg.temperature)
    top1 = (scores.argmax(1).cpu() == val_y).float().mean().item() * 100
    extra = {"k": cfg.k, "temperature": cfg.temperature, "train_images": len(train_y), "val_images": len(val_y),
             "features_reused": data.reused, "load_report": data.report.to_dict()}
    return write_run_records(ev, data.config, data.arch, {"top1": top1}, ev.elapsed(), extra)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, KnnConfig)


def main(args: argparse.Namespace) -> int:
    run(resolve_config(KnnConfig, args))
    return 0
