import pytest
import torch

from emae.errors import EmaeError
from emae.masking import (AUGMENT_STREAM, MASK_STREAM, complementary_mask, image_key, image_keys, make_part_masks,
                          mask_from_ids, noise_shape, parallel_mask, per_image_noise, random_k_masks, random_masking)

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


M64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15


def _mix64_reference(z: int) -> int:
    """splitmix64's output function on unsigned 64-bit Python integers, the scalar definition."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def _noise_reference(seed: int, epoch: int, index: int, count: int, stream: int = MASK_STREAM) -> list[float]:
    state = 0
    for value in (stream, seed, epoch, index):
        state = _mix64_reference((state + value + GAMMA) & M64)
    return [(_mix64_reference((state + p * GAMMA) & M64) >> 40) / 2**24 for p in range(1, count + 1)]


def test_per_image_noise_is_splitmix64_in_wrapping_int64_ops():
    index = torch.tensor([0, 1, 7, 2**40 + 3])
    noise = per_image_noise(12345, 3, index, (2, 5))
    assert noise.shape == (4, 2, 5) and noise.dtype == torch.float32
    for row, i in zip(noise, index.tolist()):
        assert row.flatten().tolist() == _noise_reference(12345, 3, i, 10)
    keys = image_keys(-7, 0, index, AUGMENT_STREAM)
    state = 0
    for value in (AUGMENT_STREAM, -7, 0):
        state = _mix64_reference((state + value + GAMMA) & M64)
    expected = [_mix64_reference((state + i + GAMMA) & M64) for i in index.tolist()]
    assert [k & M64 for k in keys.tolist()] == expected
    assert [image_key(-7, 0, i, AUGMENT_STREAM) for i in index.tolist()] == keys.tolist()  # the scalar form


def test_per_image_noise_depends_on_the_image_not_on_its_batch():
    index = torch.tensor([3, 17, 5, 900, 0, 8, 1, 2])
    full = per_image_noise(0, 1, index, (N,))
    assert torch.equal(per_image_noise(0, 1, index, (N,)), full)
    assert torch.equal(per_image_noise(0, 1, torch.tensor([900, 3]), (N,)), full[[3, 0]])
    assert torch.equal(per_image_noise(0, 1, index.flip(0).to(torch.int32), (N,)), full.flip(0))
    for i in range(len(index)):  # alone, as a batch of one
        assert torch.equal(per_image_noise(0, 1, index[i:i + 1], (N,))[0], full[i])


def test_per_image_noise_differs_by_image_epoch_and_seed():
    index = torch.arange(64)
    base = per_image_noise(0, 0, index, (N,))
    others = [per_image_noise(0, 1, index, (N,)), per_image_noise(1, 0, index, (N,)), base[1:]]
    assert all((base[: len(o)] == o).float().mean() < 1e-3 for o in others)  # equal only by chance, 1 in 2**24
    assert len({tuple(row.tolist()) for row in base}) == 64
    masks = parallel_mask(base, 4).mask
    assert len({tuple(m.flatten().tolist()) for m in masks}) == 64


def test_per_image_noise_is_uniform_in_the_unit_interval():
    noise = per_image_noise(0, 0, torch.arange(2048), (4, N)).flatten()  # 524288 values
    assert noise.min() >= 0 and noise.max() < 1
    assert torch.equal(noise * 2**24, (noise * 2**24).round())  # multiples of 2**-24
    assert noise.mean().item() == pytest.approx(0.5, abs=2e-3) and noise.var().item() == pytest.approx(1 / 12, abs=1e-3)
    counts = torch.histc(noise, bins=16, min=0.0, max=1.0)
    expected = len(noise) / 16
    assert ((counts - expected) ** 2 / expected).sum().item() < 50  # chi-square, 15 d.o.f.: p < 1e-4 above 50
    pairs = noise.view(-1, 2)  # neighbouring positions are uncorrelated
    assert torch.corrcoef(pairs.T)[0, 1].abs().item() < 0.01


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_per_image_noise_is_the_same_on_cuda():
    index = torch.arange(0, 4000, 7)
    assert torch.equal(per_image_noise(5, 2, index.cuda(), (3, N)).cpu(), per_image_noise(5, 2, index, (3, N)))


@pytest.mark.parametrize("strategy,parts", [("random", 1), ("parallel", 4), ("random-k", 3), ("complementary", 2)])
def test_every_strategy_masks_an_image_alike_in_any_batch(strategy, parts):
    index = torch.tensor([11, 4, 250, 9])
    shape = noise_shape(strategy, 1, N, parts)[1:]
    full = make_part_masks(strategy, per_image_noise(3, 0, index, shape), parts, 0.75)
    half = make_part_masks(strategy, per_image_noise(3, 0, index[2:], shape), parts, 0.75)
    assert torch.equal(half.mask, full.mask[2:])
    assert all(torch.equal(h, f[2:]) for h, f in zip(half.ids_keep, full.ids_keep))


def test_tied_noise_orders_by_position():
    noise = torch.tensor([[0.5, 0.25, 0.5, 0.25, 0.5, 0.25, 0.5, 0.25]])
    (ids,) = parallel_mask(noise, 2).ids_keep
    assert ids.tolist() == [[[1, 3, 5, 7], [0, 2, 4, 6]]]


def test_bad_per_image_noise_inputs_are_named():
    with pytest.raises(EmaeError, match=r"indices must be a 1-D integer tensor, got torch.float32 of shape \(3,\)"):
        per_image_noise(0, 0, torch.zeros(3), (N,))
    with pytest.raises(EmaeError, match=r"1-D integer tensor, got torch.int64 of shape \(2, 2\)"):
        per_image_noise(0, 0, torch.zeros(2, 2, dtype=torch.long), (N,))
    with pytest.raises(EmaeError, match="the seed of a per-image draw must be an int64 integer, got 10{20}"):
        per_image_noise(10**20, 0, torch.arange(2), (N,))
    with pytest.raises(EmaeError, match=r"noise shape must be a tuple of positive integers, got \(0,\)"):
        per_image_noise(0, 0, torch.arange(2), (0,))
