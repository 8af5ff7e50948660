"""Our exports through the frameworks' own models and loaders, as their users build them: detectron2's ViTDet-B
from its model zoo with ``DetectionCheckpointer``, and mmseg's shipped MAE UperNet with ``init_cfg=Pretrained``."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from emae.checkpoint import save_checkpoint
from emae.config import PretrainConfig
from emae.export import export_checkpoint
from emae.models import build_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vit_b(tmp_path_factory) -> Path:
    """An (untrained) ViT-B/16 MAE pre-training checkpoint of ours at 224 px, the paper's backbone."""
    torch.manual_seed(0)
    config = PretrainConfig(arch="vit_base_patch16", img_size=224, in_chans=3, epochs=1)
    path = tmp_path_factory.mktemp("vit_b") / "checkpoint.pth"
    save_checkpoint({"model": build_model(config.arch, 224, 3).state_dict(), "config": config.to_dict()}, path)
    return path


@pytest.mark.detectron2
def test_detectron2_model_zoo_vitdet_b_loads_the_export(vit_b, tmp_path):
    """The model zoo's ViTDet-B (``common/models/mask_rcnn_vitdet.py``: ``ViT`` + ``SimpleFeaturePyramid`` with
    the official arguments) through ``DetectionCheckpointer``: only the relative-position tables are missing
    from the backbone, and every exported tensor is the model's."""
    from detectron2 import model_zoo
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import instantiate

    path = export_checkpoint(vit_b, tmp_path / "vitdet_b.pth", "detectron2")
    model = instantiate(model_zoo.get_config("common/models/mask_rcnn_vitdet.py").model)
    checkpointer, reports = DetectionCheckpointer(model), []
    load_model = checkpointer._load_model  # keep what load() reports only in its log
    checkpointer._load_model = lambda checkpoint: reports.append(load_model(checkpoint)) or reports[-1]
    checkpointer.load(str(path))
    (incompatible,) = reports
    missing_in_backbone = {k for k in incompatible.missing_keys if k.startswith("backbone.net.")}
    assert missing_in_backbone == {f"backbone.net.blocks.{i}.attn.rel_pos_{a}" for i in range(12) for a in "hw"}
    assert incompatible.unexpected_keys == [] and incompatible.incorrect_shapes == []
    state, exported = model.state_dict(), torch.load(path, weights_only=True)["model"]
    assert all(torch.equal(state[k], v) for k, v in exported.items())


@pytest.mark.mmseg
def test_mmseg_shipped_mae_upernet_loads_every_backbone_tensor(vit_b, tmp_path):
    """mmseg's own ``mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py`` as shipped, its backbone initialised by
    ``init_cfg=dict(type="Pretrained")`` from our export: every tensor of the file is in the backbone as it is
    (the position embedding resampled from the 14x14 to the 32x32 grid, as mmseg does)."""
    from segmentation.mmcv_ops import install

    install()
    import mmseg
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    path = export_checkpoint(vit_b, tmp_path / "mae_b_mmseg.pth", "mmseg")
    cfg = Config.fromfile(str(Path(mmseg.__file__).parent / ".mim/configs/mae/"
                                                             "mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py"))
    cfg.model.backbone.init_cfg = dict(type="Pretrained", checkpoint=str(path))
    init_default_scope("mmseg")
    backbone = MODELS.build(cfg.model.backbone)
    backbone.init_weights()
    state, exported = backbone.state_dict(), torch.load(path, weights_only=True)["state_dict"]
    assert set(exported) <= set(state)
    assert [k for k, v in exported.items() if k != "pos_embed" and not torch.equal(state[k], v)] == []
    assert state["pos_embed"].shape == (1, 1 + 32 * 32, 768) and exported["pos_embed"].shape == (1, 1 + 14 * 14, 768)
    assert torch.equal(state["pos_embed"][:, 0], exported["pos_embed"][:, 0])  # the cls position, not resampled
