import pytest
import torch

from benchmarks.reference_mae import reference_forward, reference_loss
from emae.checkpoint import load_mae_state
from emae.errors import EmaeError
from emae.losses import pixel_loss, pixel_targets
from emae.masking import parallel_mask, random_masking
from emae.models import ARCHS, MaskedAutoencoderViT, build_model
from emae.pos_embed import sincos_2d


def official_mae_shapes(depth, dim, decoder_depth, decoder_dim, patch, chans, tokens):
    """Key names and shapes of the official MAE MaskedAutoencoderViT, written out from its definition."""
    def block(prefix, d):
        return {f"{prefix}.norm1.weight": (d,), f"{prefix}.norm1.bias": (d,),
                f"{prefix}.attn.qkv.weight": (3 * d, d), f"{prefix}.attn.qkv.bias": (3 * d,),
                f"{prefix}.attn.proj.weight": (d, d), f"{prefix}.attn.proj.bias": (d,),
                f"{prefix}.norm2.weight": (d,), f"{prefix}.norm2.bias": (d,),
                f"{prefix}.mlp.fc1.weight": (4 * d, d), f"{prefix}.mlp.fc1.bias": (4 * d,),
                f"{prefix}.mlp.fc2.weight": (d, 4 * d), f"{prefix}.mlp.fc2.bias": (d,)}
    shapes = {"cls_token": (1, 1, dim), "pos_embed": (1, tokens + 1, dim),
              "patch_embed.proj.weight": (dim, chans, patch, patch), "patch_embed.proj.bias": (dim,),
              "norm.weight": (dim,), "norm.bias": (dim,),
              "decoder_embed.weight": (decoder_dim, dim), "decoder_embed.bias": (decoder_dim,),
              "mask_token": (1, 1, decoder_dim), "decoder_pos_embed": (1, tokens + 1, decoder_dim),
              "decoder_norm.weight": (decoder_dim,), "decoder_norm.bias": (decoder_dim,),
              "decoder_pred.weight": (patch * patch * chans, decoder_dim), "decoder_pred.bias": (patch * patch * chans,)}
    for i in range(depth):
        shapes.update(block(f"blocks.{i}", dim))
    for i in range(decoder_depth):
        shapes.update(block(f"decoder_blocks.{i}", decoder_dim))
    return shapes


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_state_dict_has_the_official_mae_layout(name):
    arch = ARCHS[name]
    img = 32 if name == "vit_tiny_fmnist" else 224
    chans = 1 if name == "vit_tiny_fmnist" else 3
    with torch.device("meta"):
        model = build_model(name, img, chans)
    tokens = (img // arch.patch_size) ** 2
    expected = official_mae_shapes(arch.depth, arch.embed_dim, arch.decoder_depth, arch.decoder_embed_dim,
                                   arch.patch_size, chans, tokens)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected


def test_sincos_matches_mae_formula():
    emb = sincos_2d(8, (2, 3))
    assert emb.shape == (7, 8)
    assert torch.equal(emb[0], torch.zeros(8))
    # patch at row 1, col 2: first half encodes the column (w), second half the row (h)
    omega = 1.0 / 10000 ** (torch.arange(2, dtype=torch.float64) / 2.0)
    col = torch.cat([torch.sin(2 * omega), torch.cos(2 * omega)])
    row = torch.cat([torch.sin(1 * omega), torch.cos(1 * omega)])
    assert torch.allclose(emb[1 + 1 * 3 + 2].double(), torch.cat([col, row]), atol=1e-7)


def small_model(**kw):
    torch.manual_seed(0)
    return MaskedAutoencoderViT(img_size=16, patch_size=4, in_chans=3, embed_dim=32, depth=2, num_heads=2,
                                decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2, **kw)


def test_mae_loss_equals_the_official_formula():
    model = small_model().eval()
    imgs = torch.randn(3, 3, 16, 16)
    noise = torch.rand(3, 16)
    expected_pred, _ = reference_forward(model, imgs, noise, 0.75)
    expected = reference_loss(model, imgs, noise, 0.75)
    masks = random_masking(noise, 0.75)
    pred = model(imgs, masks)
    assert torch.allclose(pred[:, 0], expected_pred, atol=1e-5)
    assert torch.allclose(pixel_loss(pred, pixel_targets(imgs, 4), masks.mask), expected, atol=1e-6)


def test_parts_in_one_batch_equal_parts_run_one_by_one():
    model = small_model().eval()
    imgs = torch.randn(2, 3, 16, 16)
    masks = parallel_mask(torch.rand(2, 16), 4)
    batched = model(imgs, masks)
    (ids,) = masks.ids_keep
    for k in range(4):
        single = model.forward_decoder(model.forward_encoder(imgs, ids[:, k:k + 1]), ids[:, k:k + 1])
        assert torch.allclose(batched[:, k], single[:, 0], atol=1e-5)


def test_any_image_size_and_channel_count():
    model = MaskedAutoencoderViT(img_size=24, patch_size=8, in_chans=5, embed_dim=16, depth=1, num_heads=2,
                                 decoder_embed_dim=8, decoder_depth=1, decoder_num_heads=1)
    pred = model(torch.randn(2, 5, 24, 24), parallel_mask(torch.rand(2, 9), 3))
    assert pred.shape == (2, 3, 9, 8 * 8 * 5)
    with pytest.raises(EmaeError, match="image size 30 is not divisible by the patch size 8"):
        MaskedAutoencoderViT(img_size=30, patch_size=8)


@pytest.mark.parametrize("chans", [1, 3])
def test_patch_embedding_as_a_product_is_the_convolution(chans):
    """embed_patches (the conv's weights times patchify's vectors) gives patch_embed's values and the same weight
    gradients; images of another size are an error naming both shapes."""
    model = MaskedAutoencoderViT(img_size=24, patch_size=8, in_chans=chans, embed_dim=16, depth=1, num_heads=2,
                                 decoder_embed_dim=8, decoder_depth=1, decoder_num_heads=1)
    imgs = torch.randn(3, chans, 24, 24)
    ours = model.embed_patches(imgs)
    ours.square().sum().backward()
    grads = [p.grad.clone() for p in model.patch_embed.parameters()]
    model.zero_grad()
    theirs = model.patch_embed(imgs)
    theirs.square().sum().backward()
    torch.testing.assert_close(ours, theirs)
    for grad, p in zip(grads, model.patch_embed.parameters()):
        torch.testing.assert_close(grad, p.grad)
    with pytest.raises(EmaeError, match=rf"images of shape \({chans}, 32, 32\) do not fit the model's "
                                        rf"\({chans}, 24, 24\)"):
        model.embed_patches(torch.randn(1, chans, 32, 32))


def test_official_full_and_encoder_only_state_dicts_load():
    source, target = small_model(), small_model()
    for p in target.parameters():
        torch.nn.init.zeros_(p)
    assert load_mae_state(target, source.state_dict(), "full.pth") == []
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))
    encoder_only = {k: v for k, v in source.state_dict().items() if not k.startswith(("decoder", "mask_token"))}
    missing = load_mae_state(small_model(), encoder_only, "encoder.pth")
    assert missing and all(k.startswith(("decoder_", "mask_token")) for k in missing)
    bad = dict(source.state_dict(), **{"blocks.0.attn.qkv.weight": torch.zeros(3, 3)})
    with pytest.raises(EmaeError, match=r"blocks.0.attn.qkv.weight: file \(3, 3\) vs model \(96, 32\)"):
        load_mae_state(small_model(), bad, "bad.pth")
