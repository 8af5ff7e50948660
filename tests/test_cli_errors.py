"""Bad input to every ``emae`` command: one ``error: FILE: what is wrong`` line, exit status 2, no traceback,
and nothing that existed before is changed, nor anything new written.

Each case is a command line with placeholders: ``{in}`` the shared bad (and good) inputs, ``{out}`` a fresh
output folder of the case, ``{earlier}`` a folder of earlier outputs (records, a checkpoint, an export) that
must stay byte-for-byte as they were. The cases run in-process through ``emae.cli.main``; a few run as real
processes to check the exit status and that no traceback (nor third-party warning) reaches stderr.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from emae.checkpoint import save_checkpoint
from emae.cli import main as cli_main
from emae.config import FASHION_MNIST_DIR, PretrainConfig
from emae.models import MaskedAutoencoderViT, build_model

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.fmnist

# checkpoint files of {in} and what the error says about each, per kind of command
MISSING = ("missing.pth", "checkpoint not found")
TRUNCATED = ("truncated.pth", r"not a readable checkpoint \(truncated or corrupt\): PytorchStreamReader")
CORRUPT = ("corrupt.pth", r"not a readable checkpoint \(truncated or corrupt\): it is neither")
EMPTY = ("empty.pth", r"not a readable checkpoint \(truncated or corrupt\): the file is empty")
PATCH8 = ("patch8.pth", "the weights are a ViT of patch 8, width 128, depth 4, which does not fit vit_tiny_fmnist")
RESNET = ("resnet18.pth", "not a ViT encoder: the key 'patch_embed.proj.weight' is missing")  # torchvision
BAD_CHECKPOINTS = [MISSING, TRUNCATED, CORRUPT, EMPTY, PATCH8]


def checkpoint_cases(command: str, argv: str, extra: list[tuple[str, str]], needs: str = "") -> list:
    """One case per bad checkpoint: ``argv`` with ``{ckpt}`` in place of the checkpoint."""
    return [pytest.param(f"{argv.replace('{ckpt}', '{in}/' + name)}", f"{{in}}/{name}", message, needs,
                         id=f"{command}-{name.removesuffix('.pth')}")
            for name, message in BAD_CHECKPOINTS + extra]


NO_DECODER = "the checkpoint has no decoder"
KNN = "eval knn --output-dir {out} --checkpoint {ckpt}"
LINPROBE = "eval linprobe --output-dir {out} --checkpoint {ckpt}"
FINETUNE = "eval finetune --output-dir {out} --checkpoint {ckpt}"
DETECT = "eval detect --config vitdet_mask_rcnn_tiny --data {in}/det --output-dir {out} --checkpoint {ckpt}"
SEGMENT = "eval segment --config upernet_tiny_fmnist --data {in}/seg --output-dir {out} --checkpoint {ckpt}"
CONSISTENCY = "eval consistency --num-images 8 --output-dir {out} --checkpoint {ckpt}"
RECONSTRUCTION = "eval reconstruction --num-images 8 --output-dir {out} --checkpoint {ckpt}"
VISUALIZE = "visualize --out {out}/grid.png --checkpoint {ckpt}"
EXPORT = "export --to timm --out {earlier}/encoder.pth --checkpoint {ckpt}"  # an earlier export stays as it was
TIMM_P16_DOES_NOT_FIT = ("timm_vit_p16.pth", "which does not fit vit_tiny_fmnist")
DETECTRON2, MMSEG = "detectron2", "mmseg"

CASES = [
    # ---- a bad checkpoint, for every command that reads one
    *checkpoint_cases("export", EXPORT, [RESNET]),
    *checkpoint_cases("knn", KNN, [RESNET]),
    *checkpoint_cases("knn-arch", KNN + " --arch vit_tiny_fmnist", [TIMM_P16_DOES_NOT_FIT]),
    *checkpoint_cases("linprobe", LINPROBE, [RESNET]),
    *checkpoint_cases("finetune", FINETUNE, [RESNET]),
    *checkpoint_cases("detect", DETECT, [RESNET, ("timm_vit_p16.pth", "width 192, depth 2, heads 3, input channels "
                                                                     "1, which does not fit detection config "
                                                                     "'vitdet_mask_rcnn_tiny' .patch 4, width 128, "
                                                                     "depth 4, heads 4.")], DETECTRON2),
    *checkpoint_cases("segment", SEGMENT, [RESNET, ("timm_vit_p16.pth", "which does not fit the config's "
                                                                        "backbone .patch 4, width 128")], MMSEG),
    *checkpoint_cases("consistency", CONSISTENCY, [RESNET, ("encoder.pth", NO_DECODER)]),
    *checkpoint_cases("reconstruction", RECONSTRUCTION, [("timm_vit_p16.pth", NO_DECODER)]),
    *checkpoint_cases("visualize", VISUALIZE, [RESNET]),
    # ---- pretrain: data, presets, configs, resuming
    pytest.param("pretrain --output-dir {out} --data {in}/missing", "{in}/missing", "data folder not found", "",
                 id="pretrain-missing-data"),
    pytest.param("pretrain --output-dir {out} --data {in}/empty", "{in}/empty", "Fashion-MNIST file .* not found", "",
                 id="pretrain-empty-data"),
    pytest.param("pretrain --output-dir {out} --dataset images --data {in}/empty", "{in}/empty", "no image files", "",
                 id="pretrain-empty-images"),
    pytest.param("pretrain --output-dir {out} --dataset imagefolder --data {in}/empty", "{in}/empty",
                 "not a folder of class folders", "", id="pretrain-empty-imagefolder"),
    pytest.param("pretrain --output-dir {out} --data {in}/fmnist-truncated",
                 "{in}/fmnist-truncated/train-images-idx3-ubyte.gz", "cannot read idx file", "",
                 id="pretrain-truncated-idx"),
    pytest.param("pretrain --output-dir {out} --preset nope", "", "unknown preset 'nope'; choose one of", "",
                 id="pretrain-unknown-preset"),
    pytest.param("pretrain --output-dir {out} --method nope", "", "unknown method 'nope'", "",
                 id="pretrain-unknown-method"),
    pytest.param("pretrain --output-dir {out} --arch vit_nope", "", "unknown architecture 'vit_nope'", "",
                 id="pretrain-unknown-arch"),
    pytest.param("pretrain --output-dir {out} --config {in}/bad.yaml", "{in}/bad.yaml",
                 "not valid YAML: .* at line 2", "", id="pretrain-malformed-yaml"),
    pytest.param("pretrain --output-dir {out} --config {in}/bad.json", "{in}/bad.json", "not valid JSON", "",
                 id="pretrain-malformed-json"),
    pytest.param("pretrain --output-dir {out} --config {in}/unknown-key.yaml", "{in}/unknown-key.yaml",
                 r"unknown config key\(s\) \['epoks'\]", "", id="pretrain-config-unknown-key"),
    pytest.param("pretrain --output-dir {out} --config {in}/missing.yaml", "{in}/missing.yaml",
                 "config file not found", "", id="pretrain-missing-config"),
    pytest.param("pretrain --output-dir {earlier}", "{earlier}/checkpoint.pth",
                 "this folder holds a run; continue it with --resume", "", id="pretrain-over-an-earlier-run"),
    pytest.param("pretrain --output-dir {out} --resume", "{out}/checkpoint.pth", "checkpoint not found", "",
                 id="pretrain-resume-nothing"),
    *[pytest.param(f"pretrain --output-dir {{out}} --resume {{in}}/{name}", f"{{in}}/{name}", message, "",
                   id=f"pretrain-resume-{name.removesuffix('.pth')}")
      for name, message in [TRUNCATED, CORRUPT, ("resnet18.pth", "has no 'config'"),
                            ("patch8.pth", "not a checkpoint emae pretrain can resume: it has no")]],
    # ---- knn / linprobe / finetune: data, presets, configs, an output folder whose records are damaged
    *[pytest.param(f"eval {p} --checkpoint {{in}}/good.pth --output-dir {{out}} {flags}", where, message, "",
                   id=f"{p}-{name}")
      for p in ("knn", "linprobe", "finetune")
      for name, flags, where, message in [
          ("missing-data", "--data {in}/missing", "{in}/missing", "data folder not found"),
          ("empty-data", "--data {in}/empty", "{in}/empty", "Fashion-MNIST file .* not found"),
          ("empty-imagefolder", "--dataset imagefolder --data {in}/empty", "{in}/empty/train",
           "data folder not found"),
          ("unknown-preset", "--preset nope", "", "unknown evaluation preset 'nope'"),
          ("malformed-yaml", "--config {in}/bad.yaml", "{in}/bad.yaml", "not valid YAML"),
          ("malformed-json", "--config {in}/bad.json", "{in}/bad.json", "not valid JSON"),
          ("damaged-records", "--output-dir {in}/bad-records", "{in}/bad-records/records.jsonl:2",
           "not valid JSON"),
          ("damaged-settings", "--output-dir {in}/bad-run", "{in}/bad-run/config.json", "not valid JSON")]],
    # ---- detection
    *[pytest.param(f"eval detect --checkpoint {{in}}/good.pth --output-dir {{out}} {flags}", where, message,
                   DETECTRON2, id=f"detect-{name}")
      for name, flags, where, message in [
          ("unknown-config", "--config nope --data {in}/det", "", "unknown detection config 'nope'"),
          ("malformed-config", "--config {in}/bad.py --data {in}/det", "{in}/bad.py",
           r"not a readable LazyConfig: '\(' was never closed \(line 1\)"),
          ("missing-data", "--config vitdet_mask_rcnn_tiny --data {in}/missing", "{in}/missing",
           "dataset folder not found"),
          ("empty-data", "--config vitdet_mask_rcnn_tiny --data {in}/empty",
           "{in}/empty/annotations/instances_train.json", "annotation file not found"),
          ("malformed-annotations", "--config vitdet_mask_rcnn_tiny --data {in}/bad-coco",
           "{in}/bad-coco/annotations/instances_val.json", "not valid JSON"),
          ("unknown-opts-key", "--config vitdet_mask_rcnn_tiny --data {in}/det --opts train.nope=1", "",
           "expected KEY=VALUE with a KEY of the config"),
          ("damaged-records", "--config vitdet_mask_rcnn_tiny --data {in}/det --output-dir {in}/bad-records",
           "{in}/bad-records/records.jsonl:2", "not valid JSON"),
          ("damaged-settings", "--config vitdet_mask_rcnn_tiny --data {in}/det --output-dir {in}/bad-run",
           "{in}/bad-run/settings.json", "not valid JSON")]],
    # ---- segmentation
    *[pytest.param(f"eval segment --checkpoint {{in}}/good.pth --output-dir {{out}} {flags}", where, message, MMSEG,
                   id=f"segment-{name}")
      for name, flags, where, message in [
          ("unknown-config", "--config nope --data {in}/seg", "", "unknown segmentation config 'nope'"),
          ("malformed-config", "--config {in}/bad.py --data {in}/seg", "{in}/bad.py",
           r"not a readable mmengine config: '\(' was never closed \(line 1\)"),
          ("missing-data", "--config upernet_tiny_fmnist --data {in}/missing", "{in}/missing", "data folder not found"),
          ("empty-data", "--config upernet_tiny_fmnist --data {in}/empty", "{in}/empty", "not ADE20K's layout"),
          ("unknown-cfg-option", "--config upernet_tiny_fmnist --data {in}/seg --cfg-options model.nope=1",
           "upernet_tiny_fmnist.py", "the config does not build a runner: TypeError"),
          ("damaged-records", "--config upernet_tiny_fmnist --data {in}/seg --output-dir {in}/bad-records",
           "{in}/bad-records/records.jsonl:2", "not valid JSON")]],
    # ---- consistency, reconstruction, visualize
    *[pytest.param(f"{command} --checkpoint {{in}}/good.pth {flags}", where, message, "", id=f"{name}")
      for command, name, flags, where, message in [
          (CONSISTENCY.split(" --checkpoint")[0], "consistency-empty-data", "--dataset images --data {in}/empty",
           "{in}/empty", "no image files"),
          (CONSISTENCY.split(" --checkpoint")[0], "consistency-missing-data", "--data {in}/missing", "{in}/missing",
           "data folder not found"),
          ("eval consistency", "consistency-damaged-records", "--output-dir {in}/bad-records",
           "{in}/bad-records/records.jsonl:2", "not valid JSON"),
          (RECONSTRUCTION.split(" --checkpoint")[0], "reconstruction-empty-data",
           "--dataset imagefolder --data {in}/empty", "{in}/empty", "not a folder of class folders"),
          ("eval reconstruction", "reconstruction-damaged-records", "--output-dir {in}/bad-records",
           "{in}/bad-records/records.jsonl:2", "not valid JSON"),
          (RECONSTRUCTION.split(" --checkpoint")[0], "reconstruction-corrupt-classifier",
           "--classifier {in}/corrupt.pth", "{in}/corrupt.pth", "not a readable checkpoint"),
          ("visualize --out {out}/grid.png", "visualize-missing-image", "--images {in}/missing.png",
           "{in}/missing.png", "cannot read image"),
          ("visualize --out {out}/grid.png", "visualize-corrupt-image", "--images {images}/060.png",
           "{images}/060.png", "cannot read image"),
          ("visualize --out {out}/grid.png", "visualize-empty-data", "--dataset images --data {in}/empty",
           "{in}/empty", "no image files"),
          ("visualize", "visualize-out-a-folder", "--out {earlier}", "{earlier}", "--out must name an image file")]],
    # ---- export
    pytest.param("export --to timm --checkpoint {in}/good.pth --out {in}/good.pth", "{in}/good.pth",
                 "--out is the checkpoint being exported", "", id="export-over-its-checkpoint"),
    pytest.param("export --to timm --checkpoint {in}/good.pth --out {earlier}", "{earlier}", "is a folder", "",
                 id="export-out-a-folder"),
    pytest.param("export --to nope --checkpoint {in}/good.pth --out {out}/x.pth", "",
                 "emae export: argument --to: invalid choice: 'nope'", "", id="export-unknown-target"),
    # ---- report
    pytest.param("report --out {out} --records {in}/missing", "{in}/missing", "no such records file or folder", "",
                 id="report-missing-records"),
    pytest.param("report --out {out} --records {in}/bad-records", "{in}/bad-records/records.jsonl:2",
                 r"not valid JSON \(Expecting", "", id="report-damaged-records"),
    pytest.param("report --out {out} --records {in}/good.pth", "{in}/good.pth:1", "not valid JSON", "",
                 id="report-records-not-text"),
    pytest.param("report --out {out} --records {in}/wrong-field.jsonl", "{in}/wrong-field.jsonl:1",
                 "field 'value' must be int or float", "", id="report-record-wrong-type"),
    pytest.param("report --out {out} --records {in} --format md,pdf", "", r"unknown format\(s\) \['pdf'\]", "",
                 id="report-unknown-format"),
    # ---- data
    *[pytest.param(f"data {kind} {flags}", where, message, needs, id=f"data-{kind}-{name}")
      for kind, needs in (("detection", DETECTRON2), ("segmentation", MMSEG))
      for name, flags, where, message in [
          ("missing-fmnist", "--out {out}/d --fashion-mnist {in}/missing", "{in}/missing", "data folder not found"),
          ("empty-fmnist", "--out {out}/d --fashion-mnist {in}/empty", "{in}/empty", "Fashion-MNIST file"),
          ("truncated-idx", "--out {out}/d --fashion-mnist {in}/fmnist-truncated",
           "{in}/fmnist-truncated/train-images-idx3-ubyte.gz", "cannot read idx file"),
          ("out-not-a-dataset", "--out {earlier}", "{earlier}", "exists and is not a"),
          ("out-a-file", "--out {earlier}/records.jsonl", "{earlier}/records.jsonl", "exists and is not a")]],
    # ---- pipeline and study: checked before the first stage runs
    *[pytest.param(f"{command} {flags}", where, message, "", id=f"{command}-{name}")
      for command in ("pipeline", "study")
      for name, flags, where, message in [
          ("malformed-state", "--root {in}/bad-pipeline", "{in}/bad-pipeline/pipeline.json", "not valid JSON"),
          ("unknown-preset", "--root {out} --preset nope", "", "unknown preset 'nope'"),
          ("unknown-eval-preset", "--root {out} --eval-preset nope", "", "unknown evaluation preset 'nope'"),
          ("bad-pretrain-args", "--root {out} --pretrain-args=--subsett=8", "",
           "emae pretrain .*unrecognized arguments: --subsett=8"),
          ("damaged-records", "--root {in}/bad-records", "{in}/bad-records/records.jsonl:2", "not valid JSON")]],
    pytest.param("study --root {out} --runs byol:4", "", "--runs 'byol:4': expected METHOD:EPOCHS", "",
                 id="study-unknown-method"),
    # ---- the command line itself
    pytest.param("evaluate knn", "", "unknown command 'evaluate knn'", "", id="unknown-command"),
    pytest.param("eval knn --checkpoint {in}/good.pth --k-nn 5", "", "unrecognized arguments: --k-nn 5", "",
                 id="unknown-flag"),
]


def _digest(path: Path) -> tuple:
    stat = path.stat()
    small = stat.st_size <= 8 << 20  # larger files (resnet18) by size and modification time alone
    return stat.st_size, stat.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest() if small else ""


def snapshot(*roots: Path) -> dict[Path, tuple]:
    return {p: _digest(p) for root in roots for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, record) -> Path:
    """Good and bad inputs of every kind, shared by the cases (which must leave them as they are)."""
    import timm
    import torchvision

    root = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    config = PretrainConfig(epochs=1)
    save_checkpoint({"model": build_model(config.arch, config.img_size, config.in_chans).state_dict(),
                     "config": config.to_dict()}, root / "good.pth")
    data = (root / "good.pth").read_bytes()
    (root / "truncated.pth").write_bytes(data[: len(data) // 2])
    (root / "corrupt.pth").write_bytes(b"this is not a checkpoint\n" * 20)
    (root / "empty.pth").write_bytes(b"")
    patch8 = MaskedAutoencoderViT(img_size=32, patch_size=8, in_chans=1, embed_dim=128, depth=4, num_heads=4,
                                  decoder_embed_dim=64, decoder_depth=2, decoder_num_heads=2)
    save_checkpoint({"model": patch8.state_dict(), "config": config.to_dict()}, root / "patch8.pth")
    torch.save(torchvision.models.resnet18().state_dict(), root / "resnet18.pth")  # another framework's
    vit = timm.models.vision_transformer.VisionTransformer(img_size=32, patch_size=16, in_chans=1, embed_dim=192,
                                                           depth=2, num_heads=3, num_classes=0)
    torch.save(vit.state_dict(), root / "timm_vit_p16.pth")
    assert cli_main(["export", "--checkpoint", str(root / "good.pth"), "--to", "timm", "--out",
                     str(root / "encoder.pth")]) == 0

    (root / "empty").mkdir()
    (root / "bad.yaml").write_text("epochs: [1, 2\nlr: : 3\n")
    (root / "bad.json").write_text('{"epochs": 1,,}')
    (root / "unknown-key.yaml").write_text("epoks: 3\n")
    (root / "bad.py").write_text("model = dict(\n")
    (root / "bad-records").mkdir()
    (root / "bad-records" / "records.jsonl").write_text(json.dumps(record) + "\n" + '{"method": "mae", \n')
    (root / "wrong-field.jsonl").write_text(json.dumps(dict(record, value="80")) + "\n")
    (root / "bad-run").mkdir()  # an earlier run's folder whose settings file is damaged
    (root / "bad-run" / "records.jsonl").write_text(json.dumps(record) + "\n")
    (root / "bad-run" / "config.json").write_text('{"k": 20,')
    (root / "bad-run" / "settings.json").write_text('{"checkpoint": ')
    (root / "bad-pipeline").mkdir()
    (root / "bad-pipeline" / "pipeline.json").write_text('{"done": {"mae/pretrain": 12.0,\n')
    (root / "bad-coco" / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        (root / "bad-coco" / split).mkdir()
        (root / "bad-coco" / "annotations" / f"instances_{split}.json").write_text('{"images": [')
    (root / "fmnist-truncated").mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        data = (Path(FASHION_MNIST_DIR) / name).read_bytes()
        (root / "fmnist-truncated" / name).write_bytes(data[:2000] if "images" in name else data)
    if importlib.util.find_spec(DETECTRON2):
        from detection.synthetic import make_dataset

        make_dataset(root / "det", train=8, val=4)
    if importlib.util.find_spec(MMSEG):
        from segmentation.synthetic import generate

        generate(root / "seg", train=8, val=4)
    return root


@pytest.fixture()
def earlier(tmp_path, record) -> Path:
    """Outputs of earlier runs: a records file, a pre-training checkpoint and an export."""
    folder = tmp_path / "earlier"
    folder.mkdir()
    (folder / "records.jsonl").write_text(json.dumps(record) + "\n")
    save_checkpoint({"model": {"w": torch.arange(4.0)}, "epoch": 1}, folder / "checkpoint.pth")
    save_checkpoint({"model": {"w": torch.ones(4)}}, folder / "encoder.pth")
    return folder


def fill(template: str, inputs: Path, out: Path, earlier: Path, images: Path) -> str:
    return template.replace("{in}", str(inputs)).replace("{out}", str(out)).replace(
        "{earlier}", str(earlier)).replace("{images}", str(images))


@pytest.mark.parametrize("argv, where, message, needs", CASES)
def test_bad_input_is_one_clear_error_and_changes_nothing(argv, where, message, needs, inputs, earlier,
                                                          image_folder, tmp_path, capsys):
    if needs and not importlib.util.find_spec(needs):
        pytest.skip(f"{needs} is not installed")
    out = tmp_path / "out"
    before = snapshot(inputs, tmp_path, image_folder)

    code = cli_main(fill(argv, inputs, out, earlier, image_folder).split())

    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err[-3000:]
    named = re.escape(fill(where, inputs, out, earlier, image_folder))
    assert re.search(named, lines[0]), f"the error does not name {where}: {lines[0]}"
    assert re.search(message, lines[0]), lines[0]
    after = snapshot(inputs, tmp_path, image_folder)
    changed = sorted(str(p) for p in before if after.get(p) != before[p])
    assert not changed, f"changed or removed: {changed}"
    new = sorted(p.relative_to(tmp_path) for p in set(after) - set(before))
    assert not new, f"written: {new}"


def test_the_sweep_covers_every_command():
    from emae.cli import COMMANDS

    covered = {words for case in CASES for words in COMMANDS if tuple(case.values[0].split()[:len(words)]) == words}
    assert covered == set(COMMANDS)


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emae", *args], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, **(env or {})), timeout=300)


@pytest.mark.skipif(not importlib.util.find_spec(DETECTRON2), reason="detectron2 is not installed")
def test_a_real_process_exits_2_with_one_line_and_no_traceback_or_warnings(inputs, tmp_path):
    # eval detect imports detectron2, whose deprecation warnings must not reach the user either
    for args in (["eval", "detect", "--config", "vitdet_mask_rcnn_tiny", "--data", str(inputs / "det"),
                  "--output-dir", str(tmp_path / "out"), "--checkpoint", str(inputs / "resnet18.pth")],
                 ["report", "--records", str(inputs / "bad-records"), "--out", str(tmp_path / "report")]):
        result = _run(*args)
        assert result.returncode == 2, result.stderr[-3000:]
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr[-3000:]
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "report").exists()


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_debug_shows_the_traceback(inputs, tmp_path, how):
    args = ["export", "--to", "timm", "--out", str(tmp_path / "x.pth"), "--checkpoint", str(inputs / "corrupt.pth")]
    result = _run(*args, "--debug") if how == "flag" else _run(*args, env={"EMAE_DEBUG": "1"})
    assert result.returncode == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {inputs / 'corrupt.pth'}: not a readable")


def test_help_documents_debugging(capsys):
    assert cli_main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--debug" in text and "EMAE_DEBUG=1" in text
    with pytest.raises(SystemExit):
        cli_main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--debug" in text and "EMAE_DEBUG=1" in text
