import pytest
import torch

from emae.errors import EmaeError
from emae.masking import (complementary_mask, make_part_masks, mask_from_ids, noise_shape, parallel_mask,
                          random_k_masks, random_masking)

B, N = 5, 64


def _visible_sets(ids: torch.Tensor) -> list[list[set[int]]]:
    return [[set(part.tolist()) for part in image] for image in ids]


@pytest.mark.parametrize("parts", [2, 4, 8, 16])
def test_parallel_mask_parts_are_disjoint_and_cover_every_patch(parts):
    masks = parallel_mask(torch.rand(B, N), parts)
    (ids,) = masks.ids_keep
    assert ids.shape == (B, parts, N // parts)
    for image in _visible_sets(ids):
        assert all(len(a & b) == 0 for i, a in enumerate(image) for b in image[i + 1:])
        assert set().union(*image) == set(range(N))
    # every patch is visible in exactly one part: the masks sum to K - 1 everywhere
    assert torch.equal(masks.mask.sum(1), torch.full((B, N), parts - 1.0))
    assert torch.allclose(masks.mask.mean(-1), torch.full((B, parts), 1 - 1 / parts))


def test_parallel_mask_is_the_argsort_of_the_noise_split_in_chunks():
    noise = torch.rand(B, N)
    (ids,) = parallel_mask(noise, 4).ids_keep
    assert torch.equal(ids.reshape(B, N), noise.argsort(dim=1))


def test_masks_are_reproducible_from_the_noise():
    noise = torch.rand(B, N)
    assert torch.equal(parallel_mask(noise, 4).mask, parallel_mask(noise.clone(), 4).mask)
    assert torch.equal(random_masking(noise, 0.75).mask, random_masking(noise.clone(), 0.75).mask)
    assert not torch.equal(parallel_mask(torch.rand(B, N), 4).mask, parallel_mask(noise, 4).mask)


def test_random_masking_matches_mae():
    noise = torch.rand(B, N)
    masks = random_masking(noise, 0.75)
    (ids,) = masks.ids_keep
    assert ids.shape == (B, 1, 16)
    # MAE: mask = ones, mask[:, :len_keep] = 0, unshuffled with ids_restore
    ids_shuffle = noise.argsort(dim=1)
    ids_restore = ids_shuffle.argsort(dim=1)
    reference = torch.ones(B, N)
    reference[:, :16] = 0
    reference = torch.gather(reference, 1, ids_restore)
    assert torch.equal(masks.mask[:, 0], reference)


def test_random_k_masks_are_independent_and_may_overlap():
    masks = random_k_masks(torch.rand(B, 4, N), 0.75)
    (ids,) = masks.ids_keep
    assert ids.shape == (B, 4, 16)
    assert torch.equal(masks.mask.sum(-1), torch.full((B, 4), 48.0))
    # with replacement: over 5 images, some pair of parts shares a visible patch
    assert any(len(a & b) for image in _visible_sets(ids) for i, a in enumerate(image) for b in image[i + 1:])


def test_complementary_mask_is_a_view_and_its_complement():
    masks = complementary_mask(torch.rand(B, N), 0.75)
    small, large = masks.ids_keep
    assert small.shape == (B, 1, 16) and large.shape == (B, 1, 48)
    assert masks.mask.shape == (B, 2, N)
    assert torch.equal(masks.mask[:, 0] + masks.mask[:, 1], torch.ones(B, N))


def test_mask_from_ids_marks_visible_patches_zero():
    ids = torch.tensor([[[0, 3]]])
    assert mask_from_ids(ids, 5).tolist() == [[[0.0, 1.0, 1.0, 0.0, 1.0]]]


@pytest.mark.parametrize("strategy,parts", [("random", 1), ("parallel", 4), ("random-k", 3), ("complementary", 2)])
def test_make_part_masks_dispatches_with_the_right_noise(strategy, parts):
    noise = torch.rand(noise_shape(strategy, B, N, parts))
    assert make_part_masks(strategy, noise, parts, 0.75).parts == parts


def test_invalid_inputs_are_named():
    with pytest.raises(EmaeError, match="K=3 parts must divide the number of patches N=64"):
        parallel_mask(torch.rand(B, N), 3)
    with pytest.raises(EmaeError, match=r"mask ratio must be in \(0, 1\), got 1.0"):
        random_masking(torch.rand(B, N), 1.0)
    with pytest.raises(EmaeError, match="mask ratio must be in"):
        random_k_masks(torch.rand(B, 2, N), 0.0)
    with pytest.raises(EmaeError, match="unknown mask strategy 'block'"):
        make_part_masks("block", torch.rand(B, N), 4, 0.75)
