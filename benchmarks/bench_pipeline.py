"""The pipeline's wall time against its arithmetic floor (``python -m benchmarks.bench_pipeline``).

7. ``emae pipeline`` at its defaults (the ``fmnist-small`` preset): the wall time of its stages (``ROOT/pipeline.json``;
   they run two at a time, the pre-trainings alone) against the floor, the FLOPs the job has to compute over the
   machine's fp32 matrix-product rate (a ``square``^3 product, timed as the ceiling of [3]). Target: the job takes
   at most 3x its floor. A root whose pipeline has not finished (no ``report`` stage done) is run first, in this
   process (about 15 minutes on a 2-core CPU), with the rate timed right before and right after it and their mean
   taken: the two sides of the ratio measured in one run. A finished root is read and the rate timed now, which
   shows its stages against their floors but carries any change of the machine's speed since the run (this
   CPU's varies by half over a day); ``make bench`` therefore runs its own pipeline, in :data:`BENCH_ROOT`.

The FLOPs are counted by torch's FLOP counter (matrix products, convolutions, attention), stage by stage:

- pre-training: its record's ``flops_per_iter`` (the engine's count) x ``iterations``; none for the untrained
  backbone (``--epochs 0``);
- kNN and the linear probe: the encoder's forward x the images the stage extracted (its record's ``train_images``
  and the validation split, unless ``features_reused``: the first of the two stages extracts, the other reads
  the cache), then kNN's similarity products (the validation split's, for every k at once, and the test
  split's), or the probes' forward + backward x updates and their evaluations;
- fine-tuning: forward + backward x the images of every epoch, and the evaluation forward x validation images
  x epochs;
- consistency: the MAE's forward under the stage's M masks x its images;
- ViTDet and UperNet: one training iteration (forward + backward) of the model built from the stage's config, on
  a synthetic batch of the config's size and image size, x iterations, and the evaluation forward x validation
  images;
- data generation, exports and the report: none (floor 0; their seconds count in the wall time).

The models of the classification stages and of consistency are counted on the meta device (nothing computed;
attention as its two batched products, which the counter sees and the fused CPU kernel would hide). Detectron2's
and mmseg's models run on real tensors (their detection and pooling ops have no meta kernels): their attention is
written as plain products, and the work of their RoI heads follows the proposals of the untrained model on the
synthetic scene. What the counter does not see (RoIAlign, NMS, elementwise work, data loading) is not in the
floor, which is a lower bound. A stage whose count is not available (framework missing, no records) is listed
as not counted, and the floor is then lower still.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.ceiling import Ceiling, Gemm, product, timed_ceiling
from benchmarks.common import BenchSettings
from benchmarks.figures import Figure, Target
from benchmarks.timing import Spread, measure
from emae.checkpoint import read_weights
from emae.config import PretrainConfig, preset_config
from emae.engine import forward_backward_flops
from emae.errors import EmaeError
from emae.masking import random_k_masks
from emae.records import PIXELS, RECORDS_FILE, Record, read_records
from emae.reconstruct import predict
from emae.settings import CONFIG_FILE, read_json
from evaluation.backbone import build_vit
from evaluation.common import EvalConfig, eval_datasets
from evaluation.finetune import FinetuneConfig
from evaluation.knn import KnnConfig, knn_scores
from evaluation.linprobe import LinearHeads, LinprobeConfig, grid_loss
from evaluation.training import evaluates
from experiments.pipeline import PipelineConfig, run_pipeline, stages
from experiments.runner import Stage, State

DEFAULT_ROOT = "runs/pipeline"  # make run's root, read by python -m benchmarks.bench_pipeline
BENCH_ROOT = "runs/bench/pipeline"  # make bench's own pipeline: run afresh each time
TARGET = 3.0  # the job within 3x of its floor
LAST_STAGE = "report"


@dataclass(frozen=True)
class StageCount:
    """One stage: its seconds (None: not run), its FLOPs (None: not counted, ``note`` says why) and what was
    counted."""

    name: str
    seconds: float | None
    flops: int | None
    note: str

    def floor_s(self, rate: float) -> float | None:
        """The seconds its FLOPs take at ``rate`` FLOP/s."""
        return None if self.flops is None else self.flops / rate


# counting helpers

def forward_flops(fn: Callable[[], object]) -> int:
    """FLOPs of ``fn()`` without autograd, by torch's FLOP counter."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return counter.get_total_flops()


def option(argv: tuple[str, ...], flag: str) -> str | None:
    """The value after ``flag`` in a stage's arguments (None: not given)."""
    return argv[argv.index(flag) + 1] if flag in argv else None


def stage_records(stage: Stage) -> list[Record]:
    """The records in the stage's output folder; none there is an error (the stage did not finish)."""
    path = Path(option(stage.argv, "--output-dir")) / RECORDS_FILE
    if not path.is_file():
        raise EmaeError(f"{path}: no records (the stage did not finish)")
    return read_records(path)


def last_record(stage: Stage, protocol: str) -> Record:
    """The stage's last record of ``protocol``."""
    found = [r for r in stage_records(stage) if r.protocol == protocol]
    if not found:
        raise EmaeError(f"{stage.name}: no {protocol} record in {option(stage.argv, '--output-dir')}")
    return found[-1]


def evaluations(epochs: int, every: int) -> int:
    """How many times a run of ``epochs`` evaluates (:func:`evaluation.training.evaluates`)."""
    return sum(evaluates(epoch, epochs, every) for epoch in range(1, epochs + 1))


def num_classes(cfg: EvalConfig) -> int:
    """The classes of an evaluation's data, as the evaluation reads it."""
    return eval_datasets(cfg, None, None, len(cfg.mean)).num_classes


@dataclass(frozen=True)
class FeatureCost:
    """What a frozen-feature evaluation computes per image: the encoder's forward FLOPs and the feature width."""

    flops_per_image: int
    dim: int


def feature_cost(cfg: EvalConfig) -> FeatureCost:
    """The encoder the evaluation builds (:func:`evaluation.features.frozen_features`), counted on the meta
    device for one (1, C, H, W) image; raw pixels: no FLOPs, C x H x W values."""
    if cfg.checkpoint == PIXELS:
        size = cfg.img_size or PretrainConfig.img_size
        return FeatureCost(0, len(cfg.mean) * size * size)
    weights = read_weights(cfg.checkpoint, cfg.arch)
    model = build_vit(weights, img_size=cfg.img_size, global_pool=cfg.global_pool)[0].to("meta").eval()
    size = model.patch_embed.img_size[0]
    image = torch.zeros(1, weights.info.in_chans, size, size, device="meta")
    return FeatureCost(forward_flops(lambda: model(image)), model.num_features)


def similarity_flops(train: int, queries: int, dim: int, classes: int, k: int, temperature: float) -> int:
    """FLOPs of :func:`evaluation.knn.knn_scores` for ``queries`` (M, D) features against ``train`` (N, D)."""
    with torch.device("meta"):
        bank, labels, query = torch.zeros(train, dim), torch.zeros(train, dtype=torch.long), torch.zeros(queries, dim)
    return forward_flops(lambda: knn_scores(bank, labels, query, classes, k, temperature))


def extraction(record: Record, features: FeatureCost, val: int) -> tuple[int, str]:
    """The FLOPs of the feature extraction a kNN or probe stage did (none if it read the cache)."""
    if record.extra["features_reused"]:
        return 0, "features read from the cache"
    if not features.flops_per_image:
        return 0, "raw pixels"
    images = record.extra["train_images"] + val
    flops = features.flops_per_image * images
    return flops, f"features of {images} images ({flops / 1e9:.1f} GFLOPs)"


# the counters of each kind of stage: (FLOPs, what was counted)

def pretrain_flops(stage: Stage) -> tuple[int, str]:
    if option(stage.argv, "--epochs") == "0":
        return 0, "initialisation only (--epochs 0)"
    extra = last_record(stage, "pretrain").extra
    return (extra["flops_per_iter"] * extra["iterations"],
            f"{extra['iterations']} iterations x {extra['flops_per_iter'] / 1e9:.2f} GFLOPs")


def knn_flops(stage: Stage) -> tuple[int, str]:
    record = last_record(stage, "knn")
    cfg = KnnConfig.from_dict(record.config)
    features = feature_cost(cfg)
    train, val, test = (record.extra[f"{split}_images"] for split in ("train", "val", "test"))
    extract, what = extraction(record, features, val + test)
    classes = num_classes(cfg)
    # the grid of ks on the validation split from one product, the chosen k once on the test split (few-shot
    # banks of a few images per class: not counted)
    similarity = (similarity_flops(train, val, features.dim, classes, max(cfg.ks), cfg.temperature)
                  + similarity_flops(train, test, features.dim, classes, max(cfg.ks), cfg.temperature))
    return extract + similarity, f"{what}, {val} + {test} queries against {train} {features.dim}-d features"


def linprobe_flops(stage: Stage) -> tuple[int, str]:
    record = last_record(stage, "linprobe")
    cfg = LinprobeConfig.from_dict(record.config)
    if not cfg.fast:
        raise EmaeError(f"{stage.name}: the full-mode probe (the encoder under the probe every step) is not counted")
    features = feature_cost(cfg)
    val, test, classes = record.extra["val_images"], record.extra["test_images"], num_classes(cfg)
    train, batch = record.extra["train_images"], record.extra["batch_size"]
    extract, what = extraction(record, features, val + test)
    # one group of len(blrs) heads per read-out of the grid, each counted at the encoder's width (a concatenated
    # read-out is twice as wide: the count is a lower bound); few-shot heads are not counted
    groups, dim = len(record.extra["grid"]), features.dim
    with torch.device("meta"):
        heads = LinearHeads(groups * dim, classes, len(cfg.blrs), spans=tuple((g * dim, (g + 1) * dim)
                                                                            for g in range(groups)))
        x, y = torch.zeros(batch, groups * dim), torch.zeros(batch, dtype=torch.long)
        val_x = torch.zeros(val, groups * dim)
    step = forward_backward_flops(lambda: grid_loss(heads.train()(x), y))
    evaluation = forward_flops(lambda: heads.eval()(val_x))  # every head on the validation split
    tested = 2 * test * dim * classes  # the chosen head, once on the test split
    updates, evals = cfg.epochs * (train // batch), evaluations(cfg.epochs, cfg.eval_every)
    return (extract + step * updates + evaluation * evals + tested,
            f"{what}, {groups * len(cfg.blrs)} heads x {updates} updates of {batch}, evaluated {evals} times")


def finetune_flops(stage: Stage) -> tuple[int, str]:
    """The model :func:`evaluation.finetune.run` builds, on the meta device: forward + backward of a batch (the
    loss's own arithmetic is elementwise: the counter counts none of it) and the evaluation forward of one image."""
    record = last_record(stage, "finetune")
    cfg = FinetuneConfig.from_dict(record.config)
    weights = read_weights(cfg.checkpoint, cfg.arch)
    classes = num_classes(cfg)
    model = build_vit(weights, img_size=cfg.img_size or weights.info.img_size, num_classes=classes,
                      global_pool=cfg.global_pool, drop_path_rate=cfg.drop_path)[0].to("meta")
    extra = record.extra
    train, val, batch, epochs = extra["train_images"], extra["val_images"], extra["batch_size"], extra["epochs"]
    size = model.patch_embed.img_size[0]
    with torch.device("meta"):
        x, y = torch.zeros(batch, weights.info.in_chans, size, size), torch.zeros(batch, dtype=torch.long)
    step = forward_backward_flops(lambda: F.cross_entropy(model.train()(x), y))
    image = forward_flops(lambda: model.eval()(x[:1]))
    updates, test = epochs * (train // batch), extra["test_images"]
    return (step * updates + image * (val * epochs + test),
            f"{updates} updates of {batch} images, {epochs} x {val} validation and {test} test images")


def consistency_flops(stage: Stage) -> tuple[int, str]:
    """Each checkpoint's MAE (:func:`analysis.loader.load_models`) on the meta device: its forward under the
    stage's M masks, per image, x the images :func:`analysis.loader.eval_dataset` gives."""
    stage_records(stage)  # first: a stage without records imports nothing
    from analysis.consistency import ConsistencyConfig
    from analysis.loader import eval_dataset, load_models

    cfg = ConsistencyConfig.from_dict(read_json(Path(option(stage.argv, "--output-dir")) / CONFIG_FILE))
    flops, images = 0, 0
    for loaded in load_models(cfg):
        count = len(eval_dataset(cfg, loaded))
        model = loaded.model.to("meta")
        with torch.device("meta"):
            image = torch.zeros(1, loaded.in_chans, loaded.img_size, loaded.img_size)
            masks = random_k_masks(torch.zeros(1, cfg.masks, model.num_patches), cfg.mask_ratio)
        flops += forward_flops(lambda: predict(model, image, masks)) * count
        images += count
    return flops, f"{images} images x {cfg.masks} masks"


def command_config(stage: Stage, module):
    """The config a stage's arguments resolve to, as its command resolves them (``module``: the command's)."""
    from emae.cli import CommandParser

    parser = CommandParser(prog=f"emae {' '.join(stage.argv[:2])} (stage {stage.name})")
    module.add_arguments(parser)
    return module.resolve_config(parser.parse_args(list(stage.argv[2:])))


def detect_flops(stage: Stage) -> tuple[int, str]:
    """The detector of the stage's LazyConfig (its ``--opts`` applied), untrained, on real tensors: one training
    iteration on a batch of synthetic scenes (one 30-px item each) at the config's image size and batch, and the
    evaluation forward of a test batch, per image."""
    iterations = stage_records(stage)[-1].extra["iterations"]  # first: a stage without records imports nothing
    from detectron2.config import instantiate
    from detectron2.structures import BitMasks, Boxes, Instances
    from detectron2.utils.events import EventStorage

    from detection import cli
    from detection.datasets import find_split
    from detection.train import load_config

    config = command_config(stage, cli)
    cfg = load_config(config.config, config.opts)
    size, batch = cfg.model.backbone.net.img_size, cfg.dataloader.train.total_batch_size
    test_batch = cfg.dataloader.test.batch_size
    split = find_split(config.data, config.val_split or cfg.benchmark.val_split)
    val = len(json.loads(split.json_file.read_text(encoding="utf-8"))["images"])

    def scene(train: bool) -> dict:
        item = {"image": torch.rand(1, size, size) * 255, "height": size, "width": size}
        if train:
            mask = torch.zeros(1, size, size, dtype=torch.bool)
            mask[:, 20:50, 30:60] = True
            item["instances"] = Instances((size, size), gt_boxes=Boxes(torch.tensor([[30.0, 20.0, 60.0, 50.0]])),
                                          gt_classes=torch.tensor([3]), gt_masks=BitMasks(mask))
        return item

    torch.manual_seed(0)
    model = instantiate(cfg.model)
    with EventStorage():
        step = forward_backward_flops(lambda: sum(model.train()([scene(True) for _ in range(batch)]).values()))
    per_image = forward_flops(lambda: model.eval()([scene(False) for _ in range(test_batch)])) / test_batch
    return (int(step * iterations + per_image * val),
            f"{iterations} iterations x {step / 1e9:.2f} GFLOPs (batch {batch}, {size} px), {val} evaluation images")


def segment_flops(stage: Stage) -> tuple[int, str]:
    """UperNet of the stage's mmseg config (as :func:`segmentation.train.segment` builds it, untrained), on real
    tensors: ``model.loss`` and its backward on a batch of random (B, C, H, W) images and labels at the config's
    batch and crop size, and the evaluation forward (``mode="tensor"``), per image."""
    iterations = stage_records(stage)[-1].config["iters"]  # first: a stage without records imports nothing
    from segmentation import cli  # first: it installs the mmcv ops mmseg needs
    from segmentation.config import build_config, parse_cfg_options

    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample

    config = command_config(stage, cli)
    cfg = build_config(config.config, config.data, config.seed, config.iters, config.batch_size, config.amp,
                       parse_cfg_options(config.cfg_options))
    (height, width), batch = cfg.model.data_preprocessor.size, cfg.train_dataloader.batch_size
    classes = cfg.model.decode_head.num_classes
    test = cfg.test_dataloader
    val = len(list((Path(config.data) / test.dataset.data_prefix.img_path).glob(f"*{test.dataset.img_suffix}")))
    init_default_scope("mmseg")
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    channels = cfg.model.backbone.in_channels
    images = torch.rand(batch, channels, height, width)
    samples = []
    for _ in range(batch):
        sample = SegDataSample(metainfo=dict(img_shape=(height, width), pad_shape=(height, width),
                                             ori_shape=(height, width)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, classes, (1, height, width)))
        samples.append(sample)
    step = forward_backward_flops(lambda: model.parse_losses(model.train().loss(images, samples))[0])
    per_image = forward_flops(lambda: model.eval()(images, mode="tensor")) / batch
    return (int(step * iterations + per_image * val),
            f"{iterations} iterations x {step / 1e9:.2f} GFLOPs (batch {batch}, {height}x{width}), {val} evaluation "
            f"images")


COUNTERS: dict[tuple[str, ...], Callable[[Stage], tuple[int, str]]] = {
    ("pretrain",): pretrain_flops, ("eval", "knn"): knn_flops, ("eval", "linprobe"): linprobe_flops,
    ("eval", "finetune"): finetune_flops, ("eval", "consistency"): consistency_flops,
    ("eval", "detect"): detect_flops, ("eval", "segment"): segment_flops,
}
NO_ARITHMETIC = {("data",): "data generation", ("export",): "an export", ("report",): "the report"}


def count_stage(stage: Stage, seconds: float | None) -> StageCount:
    """The FLOPs of one stage (:data:`COUNTERS`), or why they are not counted."""
    if not stage.available:
        return StageCount(stage.name, seconds, None, f"not counted: {stage.needs} is not installed")
    for size in (2, 1):
        words = stage.argv[:size]
        if words in NO_ARITHMETIC:
            return StageCount(stage.name, seconds, 0, f"{NO_ARITHMETIC[words]}: no arithmetic")
        if words in COUNTERS:
            try:
                flops, what = COUNTERS[words](stage)
            except EmaeError as e:
                return StageCount(stage.name, seconds, None, f"not counted: {e}")
            return StageCount(stage.name, seconds, flops, what)
    return StageCount(stage.name, seconds, None, f"not counted: no counter for 'emae {' '.join(stage.argv[:2])}'")


def pipeline_config(root: Path) -> PipelineConfig:
    """The settings the pipeline in ``root`` ran with (``ROOT/config.json``), at ``root`` wherever it is now."""
    path = root / CONFIG_FILE
    if not path.is_file():
        raise EmaeError(f"{path}: not found: {root} holds no pipeline")
    return dataclasses.replace(PipelineConfig.from_dict(read_json(path), source=str(path)), root=str(root))


def finished(root: Path) -> bool:
    """Whether ``root`` holds a pipeline whose last stage (the report) is done."""
    return (root / "pipeline.json").is_file() and State(root / "pipeline.json").done(LAST_STAGE)


def count_stages(root: Path) -> list[StageCount]:
    """Every stage of the pipeline in ``root``, in order, with its seconds (``pipeline.json``) and FLOPs."""
    done = State(root / "pipeline.json").data["done"]
    return [count_stage(stage, done.get(stage.name)) for stage in stages(pipeline_config(root))]


# the rate, the table and the figure

def matmul_rate(settings: BenchSettings) -> Ceiling:
    """The fp32 rate of a ``settings.square``^3 product on the CPU: ``settings.repeats`` rounds."""
    square = Gemm("mm", 1, settings.square, settings.square, settings.square)
    timing = measure({"square": product(square)}, settings.repeats, settings.warmup)["square"]
    n = settings.square
    return timed_ceiling(timing, square.flops, f"{n}x{n}x{n} float32 product")


def stage_table(counts: list[StageCount], rate: float, wall: float) -> str:
    """One row per stage: seconds, counted GFLOPs, floor seconds at ``rate``, seconds over floor, and what was
    counted; then the run: its ``wall`` seconds (less than the stages' added up where they ran side by side) over
    the floor of them all."""
    missing = [c.name for c in counts if c.flops is None]
    stages_s = sum(c.seconds or 0.0 for c in counts)
    total = StageCount("the run", wall, sum(c.flops or 0 for c in counts),
                       f"wall time ({stages_s:.0f} s of stages); "
                       + (f"{len(missing)} not counted" if missing else "every stage counted"))

    def cells(c: StageCount) -> list[str]:
        floor = c.floor_s(rate)
        return [c.name, "-" if c.seconds is None else f"{c.seconds:.1f}",
                "n/a" if c.flops is None else f"{c.flops / 1e9:.1f}", "n/a" if floor is None else f"{floor:.2f}",
                "-" if not floor or c.seconds is None else f"{c.seconds / floor:.1f}x", c.note]

    rows = [["stage", "seconds", "GFLOPs", "floor s", "ratio", "counted"], *map(cells, counts), cells(total)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join([cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths))]
                       + [r[-1]]) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines)


def run_wall(root: Path, counts: list[StageCount]) -> float:
    """The wall time of the pipeline's stages (``ROOT/pipeline.json``'s ``wall``, added up over its re-runs); for
    a root written before the runner kept it, the stages' seconds added up (they ran one at a time then)."""
    wall = State(root / "pipeline.json").data.get("wall")
    return sum(c.seconds or 0.0 for c in counts) if wall is None else wall


def pipeline_figure(root: Path, counts: list[StageCount], rates: list[Ceiling], settings: BenchSettings,
                    run_s: float | None = None) -> Figure:
    """[7]: the run's wall time (:func:`run_wall`) over the floor (the stages' FLOPs over the mean of the
    ``rates``' medians); the spread from each round's rate. ``run_s``: the whole command's seconds where it ran
    in this process (orchestration included), shown beside."""
    wall = run_wall(root, counts)
    flops = sum(c.flops or 0 for c in counts)
    if flops == 0:
        raise EmaeError(f"{root}: no stage's FLOPs could be counted: {[c.note for c in counts]}")
    rate = sum(r.median for r in rates) / len(rates)
    per_round = [wall * r / flops for ceiling in rates for r in ceiling.per_round]
    value = Spread.of(per_round, median=wall * rate / flops)
    missing = [c.name for c in counts if c.flops is None]
    timed = "before and after the run" if run_s is not None else "after the run, on a finished root"
    print(stage_table(counts, rate, wall))
    print(f"[7] matmul rate ({rates[0].name}): {' and '.join(f'{r.median / 1e9:.1f}' for r in rates)} GFLOP/s "
          f"({timed}), {rate / 1e9:.1f} taken")
    if run_s is not None:
        print(f"[7] the command took {run_s:.0f} s, {run_s - wall:.0f} s of it outside the stages")
    print(f"[7] {wall:.0f} s of wall time / {flops / rate:.1f} s floor ({flops / 1e12:.2f} TFLOPs) = "
          f"{value.format('.1f', 'x')} (target <= {TARGET:g}x)" + (f"; not counted: {missing}" if missing else ""),
          flush=True)
    cfg = pipeline_config(root)
    config = dict(root=str(root), preset=cfg.preset, jobs=cfg.jobs, square=settings.square, repeats=settings.repeats,
                  warmup=settings.warmup)
    details = dict(wall_s=wall, stages_s=sum(c.seconds or 0.0 for c in counts), run_s=run_s, flops=flops,
                   floor_s=flops / rate, rate_flops=rate, rates_flops=[r.median for r in rates], rate_timed=timed,
                   not_counted=missing,
                   stages=[dict(stage=c.name, seconds=c.seconds, flops=c.flops, note=c.note) for c in counts])
    return Figure("[7]", f"emae pipeline ({cfg.preset}): wall time / arithmetic floor", "wall_over_floor", value,
                  f"{sum(len(r.per_round) for r in rates)} rounds of the {rates[0].name} ({timed})", "pipeline",
                  preset_config(cfg.preset).arch, "fashion-mnist", config, Target("<=", TARGET), "x", ".1f",
                  details=details)


def measure_pipeline(root: Path, settings: BenchSettings) -> Figure:
    """[7] of the pipeline in ``root``: read if it finished, else run first (in this process) between two
    timings of the rate."""
    if finished(root):
        print(f"[7] {root}: a finished pipeline; reading it and timing the matmul rate now, not with the run: the "
              f"ratio carries any change of this machine's speed since the run", flush=True)
        return pipeline_figure(root, count_stages(root), [matmul_rate(settings)], settings)
    print(f"[7] {root}: no finished pipeline; timing the matmul rate, running the pipeline (about 15 minutes on a "
          f"2-core CPU), timing the rate again", flush=True)
    before = matmul_rate(settings)
    started = time.perf_counter()
    run_pipeline(PipelineConfig(root=str(root)))
    run_s = time.perf_counter() - started
    after = matmul_rate(settings)
    return pipeline_figure(root, count_stages(root), [before, after], settings, run_s)


def clear_bench_root(root: Path) -> None:
    """Remove the pipeline a previous benchmark left in ``root`` (its figure's record keeps every stage's
    seconds and FLOPs), so that [7] times a whole run; a ``root`` that holds anything else is an error."""
    if not root.exists():
        return
    if not (root / CONFIG_FILE).is_file():
        raise EmaeError(f"{root}: not a pipeline's root (no {CONFIG_FILE}); [7] runs its own pipeline there: "
                        f"move it away")
    print(f"[7] {root}: removing the previous benchmark's pipeline", flush=True)
    shutil.rmtree(root)


def main(argv: list[str] | None = None) -> None:
    from benchmarks.run_all import finish  # here: run_all imports this module

    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=DEFAULT_ROOT, help=f"the pipeline's root (default: {DEFAULT_ROOT})")
    BenchSettings.add_arguments(parser, "cpu")
    parser.add_argument("--no-records", dest="records", action="store_const", const="", default=argparse.SUPPRESS,
                        help="print the table only (records '')")
    args = parser.parse_args(argv)
    root = Path(args.root)
    del args.root
    try:
        settings = BenchSettings.resolve(args, "cpu")
    except EmaeError as e:
        parser.error(str(e))
    started = time.perf_counter()
    finish([measure_pipeline(root, settings)], started, settings, "benchmarks.bench_pipeline")


if __name__ == "__main__":
    main(sys.argv[1:])
