"""The mmsegmentation adapter: configs, the scenes dataset, the backbone hand-off through mmseg's own loader,
errors, train + eval + resume."""
import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segmentation.mmcv_ops import install

pytest.importorskip("mmseg", reason="mmsegmentation is not installed")
install()  # before anything imports mmseg

from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

from emae import progress  # noqa: E402
from emae.checkpoint import LoadReport, encoder_info, read_weights  # noqa: E402
from emae.cli import main as cli_main  # noqa: E402
from emae.data import FASHION_MNIST_DIR  # noqa: E402
from emae.errors import EmaeError  # noqa: E402
from emae.export import export_checkpoint  # noqa: E402
from emae.export.mmseg import EXPECTED_MISSING, convert  # noqa: E402
from emae.models import MaskedAutoencoderViT  # noqa: E402
from emae.records import read_records  # noqa: E402
from segmentation import backbone as bb  # noqa: E402
from segmentation import cli as segment_cli  # noqa: E402
from segmentation import synthetic, train  # noqa: E402
from segmentation.config import (  # noqa: E402
    attach_backbone,
    build_config,
    check_data_layout,
    config_names,
    config_path,
    parse_cfg_options,
    set_iterations,
    summary,
)
from segmentation.resume import PlainCheckpointState  # noqa: E402
from segmentation.train import SegmentConfig  # noqa: E402

TINY = "upernet_tiny_fmnist"
SMALL = "upernet_small_fmnist"
VIT_B, VIT_L = "upernet_mae_vit_b_ade20k_512", "upernet_mae_vit_l_ade20k_512"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    if not Path(FASHION_MNIST_DIR).is_dir():
        pytest.skip("Fashion-MNIST not installed")
    out = tmp_path_factory.mktemp("data") / "scenes"
    synthetic.generate(out, train=8, val=4)
    return out



def build_backbone(cfg: Config):
    from mmseg.registry import MODELS

    init_default_scope("mmseg")
    return MODELS.build(cfg.model.backbone)


def test_missing_compiled_op_raises_a_clear_error():
    if not install():
        pytest.skip("full mmcv is installed: its compiled ops are used")
    from mmcv.ops import nms

    with pytest.raises(NotImplementedError, match="mmcv op nms is not available: mmcv-lite"):
        nms(torch.zeros(1, 4), torch.zeros(1), 0.5)


def test_configs_follow_the_papers_recipe(tmp_path):
    assert {TINY, VIT_B, VIT_L} <= set(config_names())
    base = build_config(VIT_B, tmp_path, seed=3)
    assert base.train_dataloader.dataset.data_root == str(tmp_path) == base.val_dataloader.dataset.data_root
    assert base.optim_wrapper.optimizer.lr == 1e-4 and base.optim_wrapper.optimizer.weight_decay == 0.05
    assert base.optim_wrapper.paramwise_cfg == dict(num_layers=12, decay_rate=0.65, decay_type="layer_wise_vit")
    assert base.optim_wrapper.constructor == "LearningRateDecayOptimizerConstructor"
    assert base.train_cfg.max_iters == 160000 and base.train_dataloader.batch_size * 8 == 16
    assert base.model.data_preprocessor.size == (512, 512) and base.model.backbone.img_size == (512, 512)
    assert base.model.backbone.out_indices == [3, 5, 7, 11] and base.model.backbone.type == "MAE"
    assert base.randomness.seed == 3 and base.dataset_name == "ADE20K val"
    large = build_config(VIT_L, tmp_path, seed=0)
    assert (large.model.backbone.embed_dims, large.model.backbone.num_layers) == (1024, 24)
    assert large.model.decode_head.in_channels == [1024] * 4 and large.optim_wrapper.paramwise_cfg.num_layers == 24

    tiny = build_config(TINY, tmp_path, seed=0, iters=10, batch_size=2,
                        cfg_options={"optim_wrapper.optimizer.lr": 5e-4})
    assert tiny.train_cfg.max_iters == 10 and tiny.default_hooks.checkpoint.interval == 10
    assert [(s.begin, s.end) for s in tiny.param_scheduler] == [(0, 10), (9, 10)]
    assert tiny.train_dataloader.batch_size == 2 and tiny.optim_wrapper.optimizer.lr == 5e-4
    attach_backbone(tiny, "w.pth")
    assert tiny.model.backbone.init_cfg == dict(type="Pretrained", checkpoint="w.pth") and tiny.model.pretrained is None
    with pytest.raises(EmaeError, match="unknown segmentation config 'nope'"):
        build_config("nope", tmp_path, seed=0)
    with pytest.raises(EmaeError, match="iters must be >= 1"):
        set_iterations(tiny, 0)


def _flat(value, prefix: str = "") -> dict:
    """A config as ``{"dotted.key": leaf}``; lists of dicts (pipelines, schedulers) are indexed by position.
    mmengine's ``_scope_`` marks (added to configs that inherit with ``mmseg::``) are left out."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() if key != "_scope_"
                for k, v in _flat(item, f"{prefix}{key}.").items()}
    if isinstance(value, (list, tuple)) and any(isinstance(item, dict) for item in value):
        return {k: v for i, item in enumerate(value) for k, v in _flat(item, f"{prefix}{i}.").items()}
    return {prefix[:-1]: value}


def test_vit_b_preset_is_mmseg_mae_recipe_but_for_the_documented_keys():
    """segmentation/README.md's recipe table: the ViT-B preset is mmseg's shipped MAE config key for key,
    except the weights (set per run), the records' dataset name, the layer-decay constructor's form (the same
    rates) and where label 0 is dropped (the dataset's reduce_zero_label instead of LoadAnnotations')."""
    import mmseg

    shipped = Config.fromfile(str(Path(mmseg.__file__).parent / ".mim/configs/mae/"
                                  "mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py"))
    ours = Config.fromfile(str(config_path(VIT_B)))
    theirs, mine = _flat(shipped.to_dict()), _flat(ours.to_dict())
    differing = {k for k in theirs.keys() | mine.keys() if theirs.get(k, "absent") != mine.get(k, "absent")}
    annotations = {f"{loader}_dataloader.dataset.pipeline.{i}.reduce_zero_label" for loader, i in
                   (("train", 1), ("val", 2), ("test", 2))} | {"train_pipeline.1.reduce_zero_label",
                                                               "test_pipeline.2.reduce_zero_label"}
    assert differing == {"model.pretrained", "model.backbone.init_cfg", "dataset_name", "optim_wrapper.constructor",
                         "optim_wrapper.paramwise_cfg.layer_decay_rate", "optim_wrapper.paramwise_cfg.decay_rate",
                         "optim_wrapper.paramwise_cfg.decay_type", *annotations}
    assert theirs["optim_wrapper.paramwise_cfg.layer_decay_rate"] == mine["optim_wrapper.paramwise_cfg.decay_rate"]
    assert all(theirs[k] is True and k not in mine for k in annotations)


def test_conversion_renames_every_encoder_key():
    model = MaskedAutoencoderViT(32, 4, 1, 128, 2, 4, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=1)
    encoder = {k: v for k, v in model.state_dict().items() if not k.startswith(("decoder_", "mask_token"))}
    out = convert(encoder, encoder_info(encoder, "x", num_heads=4))
    assert set(out) == {"cls_token", "pos_embed", "patch_embed.projection.weight", "patch_embed.projection.bias"} | {
        f"layers.{i}.{name}.{p}" for i in range(2) for p in ("weight", "bias")
        for name in ("ln1", "attn.qkv", "attn.proj", "ln2", "ffn.layers.0.0", "ffn.layers.1")}
    assert out["layers.1.ffn.layers.0.0.weight"] is encoder["blocks.1.mlp.fc1.weight"]
    assert out["layers.0.attn.qkv.bias"] is encoder["blocks.0.attn.qkv.bias"]
    with pytest.raises(EmaeError, match="'blocks.0.ls1.gamma' has no counterpart"):
        convert({**encoder, "blocks.0.ls1.gamma": torch.ones(128)}, encoder_info(encoder, "x", num_heads=4))


def test_mmseg_loads_our_export_with_only_the_expected_keys_missing(tmp_path, tiny_checkpoint):
    exported = bb.export_backbone(read_weights(tiny_checkpoint), tmp_path / "backbone.pth")
    assert exported.arch == "vit_tiny_fmnist" and exported.info.in_chans == 1 and exported.config["method"] == "emae"
    cfg = build_config(TINY, tmp_path, seed=0)
    attach_backbone(cfg, exported.path)
    backbone = build_backbone(cfg)
    bb.check_shapes(backbone, exported)
    report = bb.pretrained_load_report(backbone)
    assert set(report.missing) == {p.replace("*", str(i)) for p in EXPECTED_MISSING for i in range(4)}
    assert report.unexpected == ()
    bb.check_load_report(report, exported.path)
    ours = torch.load(tiny_checkpoint, weights_only=True)["model"]
    state = backbone.state_dict()
    assert torch.equal(state["layers.3.ffn.layers.1.weight"], ours["blocks.3.mlp.fc2.weight"])
    assert torch.equal(state["patch_embed.projection.weight"], ours["patch_embed.proj.weight"])
    # the 8x8 pre-training grid of position embeddings is resized to the 16x16 grid of 64 px scenes
    assert state["pos_embed"].shape == (1, 257, 128) and torch.equal(state["pos_embed"][:, 0], ours["pos_embed"][:, 0])
    assert not state["layers.0.attn.relative_position_bias_table"].any()  # zero-initialised, as MAE's recipe
    with pytest.raises(EmaeError, match=r"missing \['layers.\*.extra'\]"):
        bb.check_load_report(LoadReport((), ("layers.0.extra",), ()), "x")


def test_an_official_mae_vit_b_fits_the_ade20k_recipe(tmp_path):
    with torch.device("meta"):
        model = MaskedAutoencoderViT(224, 16, 3, 768, 12, 12, decoder_embed_dim=16, decoder_depth=1,
                                     decoder_num_heads=1)
    encoder = {k: torch.full(v.shape, 0.01) for k, v in model.state_dict().items()
               if not k.startswith(("decoder_", "mask_token"))}
    torch.save({"model": encoder}, tmp_path / "mae_pretrain_vit_base.pth")  # the official release's layout
    exported = bb.export_backbone(read_weights(tmp_path / "mae_pretrain_vit_base.pth"), tmp_path / "backbone.pth")
    assert exported.arch == "vit_base_patch16" and exported.config is None
    cfg = build_config(VIT_B, tmp_path, seed=0)
    attach_backbone(cfg, exported.path)
    backbone = build_backbone(cfg)
    report = bb.pretrained_load_report(backbone)
    assert bb.missing_patterns(report) == EXPECTED_MISSING and report.unexpected == ()
    assert backbone.state_dict()["pos_embed"].shape == (1, 1025, 768)  # 14x14 -> 32x32 at 512 px


def test_a_checkpoint_of_another_size_is_refused_naming_key_and_shapes(tmp_path):
    model = MaskedAutoencoderViT(32, 4, 1, 192, 4, 3, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=1)
    torch.save({"model": model.state_dict()}, tmp_path / "wide.pth")
    exported = bb.export_backbone(read_weights(tmp_path / "wide.pth"), tmp_path / "backbone.pth")
    backbone = build_backbone(build_config(TINY, tmp_path, seed=0))
    with pytest.raises(EmaeError, match=r"does not fit.*cls_token: checkpoint \(1, 1, 192\) vs backbone \(1, 1, 128\)"):
        bb.check_shapes(backbone, exported)


def test_generated_scenes_have_ade20k_layout_and_labels(scenes):
    check_data_layout(scenes)
    for split, count in (("training", 8), ("validation", 4)):
        images = sorted((scenes / "images" / split).glob("*.jpg"))
        assert len(images) == count
        image = Image.open(images[0])
        label = np.asarray(Image.open(scenes / "annotations" / split / f"{images[0].stem}.png"))
        assert image.mode == "L" and image.size == (64, 64) and label.shape == (64, 64)
        assert 0 in label and label.max() <= 10 and (label > 0).any()
    meta = json.loads((scenes / "meta.json").read_text())
    assert meta["classes"][0] == "background" and len(meta["classes"]) == 11
    baseline = synthetic.all_background_scores(scenes / "annotations" / "validation")
    assert meta["all_background_val"] == baseline and baseline["mAcc"] < 50 and baseline["mIoU"] < baseline["aAcc"]
    assert synthetic.generate(scenes, train=8, val=4) == meta  # the same settings: kept as it is
    with pytest.raises(EmaeError, match="other settings"):
        synthetic.generate(scenes, train=9, val=4)


def test_wrong_data_layout_names_the_missing_folder(tmp_path, scenes):
    with pytest.raises(EmaeError, match="data folder not found"):
        check_data_layout(tmp_path / "nowhere")
    for folder in ("images/training", "annotations/training"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "images/training/a.jpg").write_bytes(b"")
    (tmp_path / "annotations/training/a.png").write_bytes(b"")
    with pytest.raises(EmaeError, match="the folder 'images/validation' is missing"):
        check_data_layout(tmp_path)
    broken = tmp_path / "broken"
    for folder in ("images/training", "images/validation", "annotations/training", "annotations/validation"):
        (broken / folder).mkdir(parents=True)
        for f in (scenes / folder).iterdir():
            (broken / folder / f.name).write_bytes(f.read_bytes())
    (broken / "annotations" / "validation" / "validation_000002.png").unlink()
    with pytest.raises(EmaeError, match="1 image.*no annotation, e.g. validation_000002.png"):
        check_data_layout(broken)


def test_checkpoint_errors_are_one_line(tmp_path, scenes, capsys):
    args = ["eval", "segment", "--config", TINY, "--data", str(scenes), "--output-dir", str(tmp_path)]
    assert cli_main(args + ["--checkpoint", str(tmp_path / "missing.pth")]) == 2
    assert "missing.pth: checkpoint not found" in capsys.readouterr().err
    torch.save({"model": {"blocks.0.norm1.weight": torch.ones(4)}}, tmp_path / "not_vit.pth")
    assert cli_main(args + ["--checkpoint", str(tmp_path / "not_vit.pth")]) == 2
    assert "not a ViT encoder" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert cli_main(args + ["--checkpoint", str(tmp_path / "not_vit.pth"), "--launcher", "pytorch"]) == 2
        assert "--launcher pytorch needs GPUs" in capsys.readouterr().err


def _resolve(*args: str) -> SegmentConfig:
    parser = argparse.ArgumentParser()
    segment_cli.add_arguments(parser)
    return segment_cli.resolve_config(parser.parse_args(args))


def test_config_file_gives_values_that_flags_override(tmp_path):
    file = tmp_path / "segment.yaml"
    file.write_text(f"config: {TINY}\ndata: scenes\niters: 4\nbatch_size: 2\namp: true\n"
                    f"cfg_options: [default_hooks.checkpoint.interval=2]\nmethod: mae\n")
    cfg = _resolve("--config-file", str(file), "--checkpoint", "c.pth", "--iters", "8", "--no-amp")
    assert cfg == SegmentConfig(checkpoint="c.pth", config=TINY, data="scenes", iters=8, batch_size=2, amp=False,
                                cfg_options=("default_hooks.checkpoint.interval=2",), method="mae")
    # --config names the mmseg config, as before: the flag overrides the file's key
    assert _resolve("--config-file", str(file), "--checkpoint", "c", "--config", VIT_B).config == VIT_B
    file.write_text(f"checkpoint: c\nconfig: {TINY}\ndata: d\nlauncher: torchrun\n")
    with pytest.raises(EmaeError, match="launcher must be one of none, pytorch, slurm, mpi, got 'torchrun'"):
        _resolve("--config-file", str(file))
    file.write_text("iters: four\n")
    with pytest.raises(EmaeError, match="segment.yaml: iters must be int, got str 'four'"):
        _resolve("--config-file", str(file))
    with pytest.raises(EmaeError, match="checkpoint is required: give --checkpoint or the key 'checkpoint'"):
        _resolve("--config", TINY, "--data", "d")


def test_cfg_options_are_read_as_mmengine_reads_them():
    assert parse_cfg_options(("a.b=1", "lr=2e-4", "flag=true", "sizes=[1,(2,3)]", "name=x=y", "a.b=2")) == {
        "a.b": 2, "lr": 2e-4, "flag": True, "sizes": [1, (2, 3)], "name": "x=y"}
    with pytest.raises(EmaeError, match="--cfg-options 'lr': expected KEY=VALUE"):
        parse_cfg_options(("lr",))
    with pytest.raises(EmaeError, match=r"--cfg-options 'sizes=\[1,2': the value's brackets do not pair up"):
        SegmentConfig(checkpoint="c", config=TINY, data="d", cfg_options=("sizes=[1,2",)).validate()


class StopAtThirdIteration(PlainCheckpointState):
    """Stands for a run killed after its checkpoint at iteration 2."""

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter == 2:  # after the third iteration; the checkpoint of the second is written
            raise KeyboardInterrupt


def test_train_eval_resume_and_records(tmp_path, scenes, tiny_checkpoint, monkeypatch):
    cfg = SegmentConfig(checkpoint=str(tiny_checkpoint), config=TINY, data=str(scenes), output_dir=str(tmp_path),
                        iters=4, batch_size=2, cfg_options=("default_hooks.checkpoint.interval=2",))
    with monkeypatch.context() as m:
        m.setattr(train, "PlainCheckpointState", StopAtThirdIteration)
        with pytest.raises(KeyboardInterrupt):
            train.segment(cfg)
    (work_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert (work_dir / "iter_2.pth").is_file() and not (tmp_path / "records.jsonl").exists()
    assert torch.serialization.get_unsafe_globals_in_checkpoint(work_dir / "iter_2.pth") == []
    assert json.loads((work_dir / "config.json").read_text()) == cfg.to_dict()

    records = train.segment(cfg)  # resumes at iteration 2
    assert [r.metric for r in records] == ["mIoU", "mAcc", "aAcc"]
    assert all(0 <= r.value <= 100 and r.protocol == "upernet" and r.dataset == "fmnist-scenes val" for r in records)
    first = records[0]
    assert first.method == "emae" and first.arch == "vit_tiny_fmnist" and first.extra["resumed"] is True
    assert first.extra["load_report"] == {"missing": list(EXPECTED_MISSING), "unexpected": []}
    assert first.extra["parts"] == 4 and first.config["iters"] == 4 and first.config["config"] == TINY
    assert (work_dir / "iter_4.pth").is_file() and (work_dir / f"{TINY}.py").is_file()
    logs = "".join(p.read_text() for p in work_dir.glob("*/*.log"))
    assert "resumed epoch: 0, iter: 2" in logs

    mmcfg = build_config(TINY, scenes, 0, 4, 2, cfg_options={"default_hooks.checkpoint.interval": 2})
    assert first.config == {"config": TINY, "data": str(scenes), "run_id": first.extra["run_id"], **summary(mmcfg)}

    again = train.segment(cfg)  # finished: not run again, no duplicate records
    assert [dataclasses.asdict(r) for r in again] == [dataclasses.asdict(r) for r in records]
    assert len(read_records(tmp_path / "records.jsonl")) == 3

    # the same run with other records' labels is refused, naming the field; nothing is written
    with pytest.raises(EmaeError, match=r"config.json: this folder holds a run with other settings "
                                        r"\(pretrain_epochs: \[None\]\)"):
        train.segment(dataclasses.replace(cfg, pretrain_epochs=800))
    assert len(read_records(tmp_path / "records.jsonl")) == 3


def test_export_command_writes_the_mmseg_container(tmp_path, tiny_checkpoint):
    dst = export_checkpoint(tiny_checkpoint, tmp_path / "mmseg.pth", "mmseg")
    obj = torch.load(dst, weights_only=True)
    assert set(obj) == {"state_dict", "config", "encoder", "source", "target"} and obj["target"] == "mmseg"
    assert "layers.0.ln1.weight" in obj["state_dict"] and "norm.weight" not in obj["state_dict"]


def test_small_config_fits_the_fmnist_small_backbone(tmp_path, small_checkpoint):
    """upernet_small_fmnist: mmseg loads the fmnist-small export as expected, the pyramid has the ADE20K recipe's
    strides 4, 8, 16, 32 on 64-px scenes (8-px patches: an 8x8 grid), UperNet decodes at stride 4, and a run of
    the pipeline's length writes only its last checkpoint."""
    from mmseg.registry import MODELS

    cfg = build_config(SMALL, tmp_path, seed=0, iters=200)
    assert cfg.model.backbone.patch_size == 8 and cfg.train_cfg.max_iters == 200
    assert cfg.default_hooks.checkpoint.interval == 200 and cfg.param_scheduler[-1].end == 200
    exported = bb.export_backbone(read_weights(small_checkpoint), tmp_path / "backbone.pth")
    attach_backbone(cfg, exported.path)
    init_default_scope("mmseg")
    model = MODELS.build(cfg.model)
    bb.check_shapes(model.backbone, exported)
    bb.check_load_report(bb.pretrained_load_report(model.backbone), exported.path)
    images = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        levels = model.neck(model.backbone(images))
        logits = model(images, mode="tensor")
    assert [tuple(level.shape[1:]) for level in levels] == [(128, 16, 16), (128, 8, 8), (128, 4, 4), (128, 2, 2)]
    assert logits.shape == (2, 11, 16, 16)


@pytest.mark.slow
def test_small_config_run_reports_progress_and_keeps_its_last_checkpoint(tmp_path, scenes, small_checkpoint,
                                                                         monkeypatch):
    """A short run of upernet_small_fmnist: records, its final checkpoint and no other, and one progress report
    per training iteration and per test batch (4 validation scenes: one batch)."""
    calls = []
    monkeypatch.setattr(progress, "report", lambda *args: calls.append(args))
    cfg = SegmentConfig(checkpoint=str(small_checkpoint), config=SMALL, data=str(scenes), output_dir=str(tmp_path),
                        iters=3, batch_size=2)
    records = train.segment(cfg)
    assert [r.metric for r in records] == ["mIoU", "mAcc", "aAcc"] and records[0].arch == "vit_tiny_p8_fmnist"
    (work_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert sorted(p.name for p in work_dir.glob("*.pth")) == [train.BACKBONE_FILE, "iter_3.pth"]
    assert calls == [(1, 3, "iters", "train"), (2, 3, "iters", "train"), (3, 3, "iters", "train"),
                     (1, 1, "batches", "eval")]
