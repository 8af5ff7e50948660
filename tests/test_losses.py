import pytest
import torch

from emae.losses import patchify, pixel_loss, pixel_targets, self_consistency_loss, unpatchify
from emae.masking import parallel_mask, random_k_masks, random_masking


def reference_consistency(pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The definition, one ordered pair at a time: mean |p_i - sg(p_j)| over values masked in both."""
    k = pred.shape[1]
    total = pred.new_zeros(())
    for i in range(k):
        for j in range(k):
            if i == j:
                continue
            both = (mask[:, i] * mask[:, j]).unsqueeze(-1).expand_as(pred[:, i])
            if both.sum() == 0:
                continue
            diff = (pred[:, i] - pred[:, j].detach()).abs()
            total = total + (diff * both).sum() / both.sum()
    return total / (k * (k - 1))


def test_patchify_matches_mae_layout_and_inverts():
    imgs = torch.randn(2, 3, 8, 12)
    patches = patchify(imgs, 4)
    assert patches.shape == (2, 6, 48)
    # patch (row 1, col 2), value at (p=1, q=3, c=2) is pixel (c=2, y=4+1, x=8+3)
    assert patches[0, 1 * 3 + 2, (1 * 4 + 3) * 3 + 2] == imgs[0, 2, 5, 11]
    assert torch.equal(unpatchify(patches, 4, 3, (2, 3)), imgs)


def test_pixel_loss_with_one_part_is_mae_forward_loss():
    imgs = torch.randn(3, 1, 16, 16)
    masks = random_masking(torch.rand(3, 16), 0.75)
    pred = torch.randn(3, 1, 16, 16)
    target = pixel_targets(imgs, 4, norm_pix=True)
    # MAE: normalise target per patch, (pred - target)**2 mean over values, mean over masked patches
    t = patchify(imgs, 4)
    t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6) ** 0.5
    per_patch = ((pred[:, 0] - t) ** 2).mean(-1)
    expected = (per_patch * masks.mask[:, 0]).sum() / masks.mask[:, 0].sum()
    assert torch.allclose(pixel_loss(pred, target, masks.mask), expected)


def test_self_consistency_is_zero_for_identical_predictions():
    masks = parallel_mask(torch.rand(4, 16), 4)
    pred = torch.randn(4, 1, 16, 8).expand(4, 4, 16, 8).contiguous()
    assert self_consistency_loss(pred, masks.mask).item() == 0.0


def test_self_consistency_counts_only_positions_masked_in_both_parts():
    masks = parallel_mask(torch.rand(2, 16), 4)
    pred = torch.randn(2, 4, 16, 8)
    before = self_consistency_loss(pred, masks.mask)
    # change part 0's prediction where part 0 sees the patch (not masked): no pair counts that position
    changed = pred.clone()
    changed[:, 0][masks.mask[:, 0] == 0] += 100.0
    assert torch.allclose(self_consistency_loss(changed, masks.mask), before)
    changed[:, 0][masks.mask[:, 0] == 1] += 1.0
    assert not torch.allclose(self_consistency_loss(changed, masks.mask), before)


def test_self_consistency_equals_the_per_pair_loop_value_and_gradient():
    for masks, shape in [(parallel_mask(torch.rand(3, 16), 4), (3, 4, 16, 6)),
                         (random_k_masks(torch.rand(3, 3, 16), 0.6), (3, 3, 16, 6))]:
        pred = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        ours = self_consistency_loss(pred, masks.mask.double())
        (grad_ours,) = torch.autograd.grad(ours, pred)
        ref = reference_consistency(pred, masks.mask.double())
        (grad_ref,) = torch.autograd.grad(ref, pred)
        assert torch.allclose(ours, ref)
        assert torch.allclose(grad_ours, grad_ref)


def brute_force_consistency(pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The paper's definition written out element by element: for each image and each ordered pair (i, j),
    i != j, the mean over the values of the patches masked in both of |p_i - sg(p_j)|; averaged over pairs, then
    over images."""
    b, k, n, _ = pred.shape
    per_image = []
    for img in range(b):
        pairs = []
        for i in range(k):
            for j in range(k):
                both = [p for p in range(n) if i != j and mask[img, i, p] and mask[img, j, p]]
                if both:
                    diffs = [(pred[img, i, p] - pred[img, j, p].detach()).abs().mean() for p in both]
                    pairs.append(torch.stack(diffs).mean())
        per_image.append(torch.stack(pairs).mean())
    return torch.stack(per_image).mean()


@pytest.mark.parametrize("k, n", [(3, 12), (4, 16), (4, 64)])
def test_self_consistency_equals_the_brute_force_definition(k, n):
    # parallel masks overlap on the same number of patches in every image, so the batch's mean over each pair's
    # overlap equals the mean of the images' own
    torch.manual_seed(k * n)
    masks = parallel_mask(torch.rand(3, n), k)
    pred = torch.randn(3, k, n, 5, dtype=torch.float64, requires_grad=True)
    ours = self_consistency_loss(pred, masks.mask.double())
    (grad_ours,) = torch.autograd.grad(ours, pred)
    brute = brute_force_consistency(pred, masks.mask.bool())
    (grad_brute,) = torch.autograd.grad(brute, pred)
    assert torch.allclose(ours, brute) and ours > 0
    assert torch.allclose(grad_ours, grad_brute)


def test_self_consistency_gradient_pulls_each_part_towards_the_others():
    masks = parallel_mask(torch.rand(1, 8), 4)
    pred = torch.zeros(1, 4, 8, 1)
    pred[:, 0] = 1.0  # part 0 predicts 1 where the others predict 0
    pred.requires_grad_(True)
    self_consistency_loss(pred, masks.mask).backward()
    both = (masks.mask[0, 0] * masks.mask[0, 1:].amax(0)).bool()
    assert (pred.grad[0, 0, both] > 0).all()  # descending the gradient lowers part 0 towards 0
    assert (pred.grad[0, 1:, both] <= 0).all()  # and raises the others towards 1
    assert (pred.grad[0, 0, ~masks.mask[0, 0].bool()] == 0).all()  # visible positions get none


def test_self_consistency_memory_is_linear_in_parts():
    # the autograd graph keeps only the (B, K, N, P) predictions: nothing K x K sized is saved
    masks = parallel_mask(torch.rand(2, 64), 8)
    pred = torch.randn(2, 8, 64, 16, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        self_consistency_loss(pred, masks.mask)
    assert max(saved) <= pred.numel()
    assert sum(saved) <= pred.numel() + masks.mask.numel() + 8 * 8
