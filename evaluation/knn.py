"""``emae eval knn``: weighted k-nearest-neighbour classification of frozen features (DINO's protocol).

Features (the read-out of ``global_pool``: the cls token or the average of the patch tokens of the last block)
are L2-normalised; each query votes with its k most cosine-similar training images, each vote weighted by
``exp(similarity / T)`` (T = 0.07). A quick signal of a backbone's quality, without training anything.

k is chosen from a grid (``ks``: DINO's 10, 20, 100, 200) on the validation split, held out of the training
images (:func:`evaluation.common.eval_datasets`); the test split is scored once, with that k, and is the
record's ``top1``. ``shots``: few-shot kNN as well, the bank ``shots`` random training images per class
(``shot_subsets`` draws; k chosen on the validation split for each draw among the ks the bank holds), recorded
as ``top1_Nshot``, the mean over the draws, with each draw in the record's ``few_shot``.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from torch import Tensor

from emae.errors import EmaeError
from emae.knn import knn_grid_scores, knn_scores
from emae.records import print_records
from evaluation.common import (EvalConfig, add_config_arguments, few_shot_summary, resolve_config, selection,
                               start_run, write_run_records)
from evaluation.features import evaluation_features, few_shot_subsets


@dataclass
class KnnConfig(EvalConfig):
    ks: tuple[int, ...] = (10, 20, 100, 200)  # the k chosen from on the validation split
    temperature: float = 0.07
    shots: tuple[int, ...] = ()  # few-shot kNN: training images per class in the bank (none: no few-shot)
    shot_subsets: int = 3  # random draws of each few-shot bank
    features_dir: str = ""  # where frozen features are cached ("": the output folder); shareable with linprobe

    protocol = "knn"
    takes_pixels = True

    def validate(self) -> "KnnConfig":
        super().validate()
        if not self.ks or min(self.ks) < 1 or self.temperature <= 0:
            raise EmaeError(f"ks must be one or more k >= 1 and temperature > 0, got ks={self.ks}, "
                            f"temperature={self.temperature}")
        if (self.shots and min(self.shots) < 1) or self.shot_subsets < 1:
            raise EmaeError(f"shots must be >= 1 and shot_subsets >= 1, got shots={self.shots}, "
                            f"shot_subsets={self.shot_subsets}")
        return self


def knn_top1(bank: tuple[Tensor, Tensor], queries: tuple[Tensor, Tensor], num_classes: int, k: int,
             temperature: float) -> float:
    """Top-1 accuracy (percent) of kNN (:func:`emae.knn.knn_scores`) of (M, D) query features and (M,) labels
    against a bank of (N, D) features and (N,) labels."""
    scores = knn_scores(bank[0], bank[1], queries[0], num_classes, k, temperature)
    return (scores.argmax(1) == queries[1]).float().mean().item() * 100


def select_k(bank: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor],
             num_classes: int, ks: tuple[int, ...], temperature: float) -> tuple[dict[str, float], int, float]:
    """(validation top-1 of every k, the k of the best (the first listed of a tie), its test top-1): k chosen on
    ``val`` (every k from one similarity product, :func:`emae.knn.knn_grid_scores`) and ``test`` scored once, with
    it. Features (N, D) and labels (N,) as :func:`knn_top1` takes them."""
    hits = knn_grid_scores(bank[0], bank[1], val[0], num_classes, ks, temperature).argmax(-1) == val[1]
    grid = {str(k): hit.float().mean().item() * 100 for k, hit in zip(ks, hits)}
    best = max(ks, key=lambda k: grid[str(k)])
    return grid, best, knn_top1(bank, test, num_classes, best, temperature)


def run(cfg: KnnConfig):
    """Run (or, when its record exists, skip) a kNN evaluation; returns its records."""
    ev, done = start_run(cfg)
    if done:
        print_records(done, " (already done: the record exists)")
        return done
    data = evaluation_features(ev, cfg.features_dir)
    train, val, test = [(data.readout(split, data.default).to(ev.device), split[1].to(ev.device))
                        for split in (data.train, data.val, data.test)]
    grid, k, top1 = select_k(train, val, test, data.splits.num_classes, cfg.ks, cfg.temperature)
    metrics, few_shot = {"top1": top1}, {}
    for shots in cfg.shots:
        draws = []
        for index in few_shot_subsets(train[1], data.splits.num_classes, shots, cfg.shot_subsets, cfg.seed):
            bank = (train[0][index.to(ev.device)], train[1][index.to(ev.device)])
            ks = tuple(k for k in cfg.ks if k <= len(index))
            if not ks:
                raise EmaeError(f"few-shot kNN of {shots} images per class: no k of ks {cfg.ks} fits its bank of "
                                f"{len(index)} images")
            shot_grid, shot_k, shot_top1 = select_k(bank, val, test, data.splits.num_classes, ks, cfg.temperature)
            draws.append({"grid": shot_grid, "k": shot_k, "val_top1": shot_grid[str(shot_k)], "top1": shot_top1})
        few_shot[str(shots)] = few_shot_summary(draws)
        metrics[f"top1_{shots}shot"] = few_shot[str(shots)]["mean"]
    extra = {"k": k, "ks": list(cfg.ks), "temperature": cfg.temperature, "readout": data.default, "grid": grid,
             **selection(data.splits, {"k": k}, grid[str(k)]), "few_shot": few_shot, "train_images": len(train[1]),
             "val_images": len(val[1]), "test_images": len(test[1]), "features_reused": data.reused,
             "load_report": data.report.to_dict()}
    return write_run_records(ev, data.config, data.arch, metrics, ev.elapsed(), extra)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, KnnConfig)


def main(args: argparse.Namespace) -> int:
    run(resolve_config(KnnConfig, args))
    return 0
