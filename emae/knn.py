"""Weighted k-nearest-neighbour class scores of features (DINO's protocol), shared by ``emae eval knn`` and the
pre-training monitor (``emae.monitor``).

Features are L2-normalised; each query votes with its k most cosine-similar bank features, each vote weighted by
``exp(similarity / T)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from emae.errors import EmaeError


def knn_scores(train_features: Tensor, train_labels: Tensor, features: Tensor, num_classes: int, k: int = 20,
               temperature: float = 0.07, chunk: int = 1024) -> Tensor:
    """Class scores of each query from its k nearest training features (cosine similarity).

    Args:
        train_features: (N, D); train_labels: (N,) in [0, num_classes).
        features: (M, D) queries.
    Returns:
        (M, num_classes) sums of ``exp(similarity / temperature)`` over each query's neighbours per class.
    """
    return knn_grid_scores(train_features, train_labels, features, num_classes, (k,), temperature, chunk)[0]


def knn_grid_scores(train_features: Tensor, train_labels: Tensor, features: Tensor, num_classes: int,
                    ks: tuple[int, ...], temperature: float = 0.07, chunk: int = 1024) -> Tensor:
    """:func:`knn_scores` of every k of ``ks`` from one similarity product: each query's ``max(ks)`` nearest
    training features, of which each k takes the first k.

    Args:
        train_features: (N, D); train_labels: (N,) in [0, num_classes).
        features: (M, D) queries.
    Returns:
        (len(ks), M, num_classes) sums of ``exp(similarity / temperature)`` over each query's k neighbours per class.
    """
    if max(ks) > len(train_features):
        raise EmaeError(f"k={max(ks)} is larger than the {len(train_features)} training images")
    bank = F.normalize(train_features, dim=1)
    scores = []
    for start in range(0, len(features), chunk):
        query = F.normalize(features[start:start + chunk], dim=1)
        similarity, index = (query @ bank.T).topk(max(ks), dim=1)  # (m, max k), nearest first
        weights, labels = (similarity / temperature).exp(), train_labels[index]
        votes = torch.zeros(len(ks), len(query), num_classes, dtype=bank.dtype, device=bank.device)
        for i, k in enumerate(ks):
            votes[i].scatter_add_(1, labels[:, :k], weights[:, :k])
        scores.append(votes)
    return torch.cat(scores, dim=1)
