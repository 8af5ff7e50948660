"""The ``emae`` command.

Each command lives in the module that does the work, which provides ``add_arguments(parser)`` and
``main(args)``. Only the module of the command being run is imported, so ``emae report`` does not pay for
detectron2 and ``emae eval detect`` does not need mmsegmentation.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from emae.errors import EmaeError

COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("pretrain",): ("emae.engine", "pre-train a ViT with MAE, EMAE or an ablation"),
    ("export",): ("emae.export", "export a checkpoint's encoder for timm, detectron2 or mmsegmentation"),
    ("eval", "linprobe"): ("evaluation.linprobe", "linear probe on frozen features (MAE recipe)"),
    ("eval", "finetune"): ("evaluation.finetune", "end-to-end fine-tuning (MAE recipe)"),
    ("eval", "knn"): ("evaluation.knn", "weighted kNN on frozen features"),
    ("eval", "detect"): ("detection.cli", "ViTDet / ViT-FPN Mask R-CNN on detectron2"),
    ("data", "detection"): ("detection.synthetic", "write the Fashion-MNIST scenes detection dataset (COCO format)"),
    ("eval", "segment"): ("segmentation.cli", "UperNet on mmsegmentation"),
    ("data", "segmentation"): ("segmentation.synthetic", "generate Fashion-MNIST scenes in ADE20K's layout"),
    ("eval", "consistency"): ("evaluation.consistency", "agreement of predictions across random masks"),
    ("eval", "reconstruction"): ("evaluation.reconstruction", "SSIM / LPIPS / FID and classification of reconstructions"),
    ("visualize",): ("emae.visualize", "reconstruction grids over several mask seeds (Figures 1, 4)"),
    ("report",): ("results.report", "rebuild the paper's tables with our records"),
    ("pipeline",): ("emae.pipeline", "pre-train MAE and EMAE, run every evaluation, write the report"),
    ("study",): ("emae.study", "pre-training length against accuracy and wall time, over seeds (Table XII)"),
}


def _usage() -> str:
    lines = ["usage: emae COMMAND [options]   (emae COMMAND --help for a command's options)", "", "commands:"]
    for words, (_, help_text) in COMMANDS.items():
        lines.append(f"  {' '.join(words):<18} {help_text}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for size in (2, 1):
        words = tuple(argv[:size])
        if words in COMMANDS:
            break
    else:
        if argv and argv[0] not in ("-h", "--help"):
            print(f"error: unknown command {' '.join(argv[:2])!r}\n\n{_usage()}", file=sys.stderr)
            return 2
        print(_usage())
        return 0
    module_name, help_text = COMMANDS[words]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog="emae " + " ".join(words), description=help_text)
    module.add_arguments(parser)
    args = parser.parse_args(argv[len(words):])
    try:
        return module.main(args) or 0
    except EmaeError as e:
        print(f"error: {user_message(e)}", file=sys.stderr)
        return 2


def user_message(error: EmaeError) -> str:
    """The error's own message; for one raised in a DataLoader worker (which the loader re-raises with the
    worker's traceback in the text), the original message alone."""
    text = str(error)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text


if __name__ == "__main__":
    sys.exit(main())
