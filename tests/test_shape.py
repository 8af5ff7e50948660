"""The one shape reader and the one architecture name: every protocol names a backbone alike."""
from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from emae.checkpoint import default_heads, read_vit_shape, read_weights, save_checkpoint
from emae.errors import EmaeError
from emae.models import ARCHS, MaskedAutoencoderViT, build_model
from emae.records import backbone_fields, read_records

# DeiT-Tiny's encoder (patch 16, 192-d, 12 blocks, 3 heads), registered nowhere in the suite, at 32 px and one
# channel so that it runs on Fashion-MNIST: what a foreign checkpoint looks like to every protocol
DEIT_TINY = dict(img_size=32, patch_size=16, in_chans=1, embed_dim=192, depth=12, num_heads=3)
DEIT_NAME = "vit_p16_d192_l12"


@pytest.fixture(scope="module")
def deit_tiny(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("foreign") / "deit_tiny.pth"
    torch.save(VisionTransformer(num_classes=10, **DEIT_TINY).state_dict(), path)  # a timm state dict, with a head
    return path


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_registered_architectures_read_back_with_their_name(name, tmp_path):
    """A plain state dict (no config): shape from the weights, heads and name from the registry."""
    arch = ARCHS[name]
    torch.save(build_model(name, 4 * arch.patch_size, 3).state_dict(), tmp_path / "weights.pth")
    weights = read_weights(tmp_path / "weights.pth")
    info, decoder = weights.info, weights.shape.decoder
    assert (info.patch_size, info.embed_dim, info.depth, info.num_heads) == (arch.patch_size, arch.embed_dim,
                                                                            arch.depth, arch.num_heads)
    assert (decoder.embed_dim, decoder.depth, decoder.num_heads) == (arch.decoder_embed_dim, arch.decoder_depth,
                                                                     arch.decoder_num_heads)
    assert info.img_size == 4 * arch.patch_size and info.in_chans == 3 and weights.mlp_ratio == arch.mlp_ratio
    assert weights.arch == info.arch_name() == name


def test_an_unregistered_mae_is_rebuilt_from_its_weights():
    model = MaskedAutoencoderViT(img_size=32, patch_size=8, in_chans=1, embed_dim=96, depth=3, num_heads=2,
                                 decoder_embed_dim=64, decoder_depth=1, decoder_num_heads=2, mlp_ratio=2.0)
    shape = read_vit_shape(model.state_dict(), "x.pth", num_heads=2, decoder_num_heads=2)
    rebuilt = MaskedAutoencoderViT(**shape.model_kwargs())
    rebuilt.load_state_dict(model.state_dict())  # strict: every key and shape fits
    assert shape.encoder.arch_name() == "vit_p8_d96_l3"


def test_heads_rule_and_bad_shapes_are_errors():
    assert default_heads(768, "x") == 12 and default_heads(512, "x") == 8 and default_heads(512, "x", 32) == 16
    with pytest.raises(EmaeError, match="x: cannot tell the number of attention heads of a 100-d ViT"):
        default_heads(100, "x")
    state = build_model("vit_tiny_fmnist", 32, 1).state_dict()
    with pytest.raises(EmaeError, match="3 encoder heads do not divide its width 128"):
        read_vit_shape(state, "x", num_heads=3)
    with pytest.raises(EmaeError, match="not a square grid"):
        read_vit_shape(dict(state, pos_embed=state["pos_embed"][:, :-1]), "x")
    with pytest.raises(EmaeError, match="the key 'pos_embed' is missing"):
        read_vit_shape({k: v for k, v in state.items() if k != "pos_embed"}, "x")


def test_the_config_names_the_architecture_and_must_fit(tmp_path):
    cfg = {"arch": "vit_tiny_fmnist", "method": "emae", "epochs": 1, "data": "x"}
    save_checkpoint({"model": build_model("vit_tiny_p8_fmnist", 32, 1).state_dict(), "config": cfg}, tmp_path / "c.pth")
    with pytest.raises(EmaeError, match="patch 8, width 128, depth 4, which does not fit vit_tiny_fmnist named by "
                                        "its config .patch 4."):
        read_weights(tmp_path / "c.pth")


@pytest.mark.fmnist
@pytest.mark.detectron2
@pytest.mark.mmseg
def test_a_foreign_backbone_has_one_arch_in_every_protocol(deit_tiny, tmp_path):
    """A classification record (a real kNN run), the detection and the segmentation hand-offs (whose ``arch``
    their records take) all name the DeiT-Tiny-shaped backbone alike."""
    from detection.checkpoint import prepare_backbone, read_backbone
    from emae.cli import main
    from segmentation.backbone import export_backbone

    assert main(["eval", "knn", "--checkpoint", str(deit_tiny), "--train-limit", "200", "--val-limit", "100",
                 "--shots", "1", "--num-workers", "0", "--output-dir", str(tmp_path / "knn")]) == 0
    classification = read_records(tmp_path / "knn")[0].arch
    weights = read_weights(deit_tiny)
    detection = read_backbone(deit_tiny, tmp_path / "det").arch
    exported = prepare_backbone(deit_tiny, tmp_path / "det")  # the detectron2 file, read back as a detect run does
    detection_export = read_backbone(exported.path, tmp_path / "det2").arch
    segmentation = export_backbone(weights, tmp_path / "seg" / "backbone.pth").arch
    names = {classification, detection, detection_export, segmentation, weights.arch,
             backbone_fields(None, detection)["arch"]}
    assert names == {DEIT_NAME}
    assert weights.info.num_heads == 3 and weights.dropped == ("head.bias", "head.weight")
