"""The ``emae`` command.

Each command lives in the module that does the work, which provides ``add_arguments(parser)`` and
``main(args)``. Only the module of the command being run is imported, so ``emae report`` does not pay for
detectron2 and ``emae eval detect`` does not need mmsegmentation.

Bad input (an :class:`~emae.errors.EmaeError`, a bad flag, a file that cannot be opened) ends a command with
one ``error: ...`` line on stderr and exit status 2, without a traceback; ``--debug`` (anywhere on the command
line) or ``EMAE_DEBUG=1`` adds the traceback and shows the third-party deprecation warnings that are
otherwise hidden. Any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
import warnings

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
    ("eval", "consistency"): ("analysis.consistency", "agreement of predictions across random masks"),
    ("eval", "reconstruction"): ("analysis.reconstruction", "SSIM / LPIPS / FID and classification of reconstructions"),
    ("visualize",): ("analysis.visualize", "reconstruction grids over several mask seeds (Figures 1, 4)"),
    ("report",): ("results.report", "rebuild the paper's tables with our records"),
    ("pipeline",): ("experiments.pipeline", "pre-train MAE and EMAE, run every evaluation, write the report"),
    ("study",): ("experiments.study", "pre-training length against accuracy and wall time, over seeds (Table XII)"),
}
DEBUG_FLAG = "--debug"
DEBUG_ENV = "EMAE_DEBUG"
DEBUG_HELP = (f"bad input ends with one 'error: ...' line and exit status 2; {DEBUG_FLAG} (anywhere on the command "
              f"line) or {DEBUG_ENV}=1 adds the Python traceback and shows third-party deprecation warnings")
# warnings that third-party code raises on import or use and that we cannot fix: hidden from the command's
# output unless debugging (the test suite lists its own filters in pyproject.toml)
THIRD_PARTY = r"(torch|torchvision|timm|detectron2|fvcore|iopath|mmengine|mmcv|mmseg|pkg_resources|setuptools)(\.|$)"


class UsageError(Exception):
    """A command line argparse rejects (unknown flag, missing value, invalid choice)."""


class CommandParser(argparse.ArgumentParser):
    """argparse, but a usage error is raised (and printed by :func:`main` as one line) instead of exiting."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _usage(group: tuple[str, ...] = ()) -> str:
    """The list of commands, or of the subcommands of ``group`` (``("eval",)``), one line each."""
    name = " ".join(("emae",) + group)
    lines = [f"usage: {name} {'SUBCOMMAND' if group else 'COMMAND'} [options]   ({name} "
             f"{'SUBCOMMAND' if group else 'COMMAND'} --help for its options)", "",
             "subcommands:" if group else "commands:"]
    for words, (_, help_text) in COMMANDS.items():
        if words[:len(group)] == group:
            lines.append(f"  {' '.join(words[len(group):] if group else words):<18} {help_text}")
    lines += ["", f"{DEBUG_HELP}."]
    return "\n".join(lines)


def _groups() -> set[tuple[str, ...]]:
    """The first words of the commands that have subcommands (``eval``, ``data``)."""
    return {words[:1] for words in COMMANDS if len(words) > 1}


def debugging(argv: list[str]) -> bool:
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def quiet_third_party_warnings() -> None:
    """Hide the deprecation notices third-party packages print on import (they are not the user's to fix)."""
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category, module=THIRD_PARTY)
    # detectron2 and mmengine import pkg_resources, which warns (as a UserWarning) that it is deprecated
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debugging(argv)
    argv = [a for a in argv if a != DEBUG_FLAG]
    for size in (2, 1):
        words = tuple(argv[:size])
        if words in COMMANDS:
            break
    else:
        group = tuple(argv[:1]) if tuple(argv[:1]) in _groups() else ()
        rest = argv[len(group):]
        if rest and rest[0] not in ("-h", "--help"):
            where = f"emae {group[0]} --help" if group else "emae --help"
            print(f"error: unknown command {' '.join(argv[:2])!r}; run '{where}' for the list", file=sys.stderr)
            return 2
        print(_usage(group))
        return 0
    if not debug:
        quiet_third_party_warnings()
    module_name, help_text = COMMANDS[words]
    try:
        module = importlib.import_module(module_name)
        parser = CommandParser(prog="emae " + " ".join(words), description=help_text, epilog=DEBUG_HELP)
        module.add_arguments(parser)
        args = parser.parse_args(argv[len(words):])
        return module.main(args) or 0
    except (EmaeError, UsageError, OSError) as e:
        if isinstance(e, OSError) and not getattr(e, "filename", None):
            raise  # not about a file the user named: a bug, with its traceback
        if debug:
            traceback.print_exc()
        print(f"error: {user_message(e)}", file=sys.stderr)
        return 2


def user_message(error: BaseException) -> str:
    """The error's message on one line: an OSError as ``FILE: reason``; for an error raised in a DataLoader
    worker (which the loader re-raises with the worker's traceback in the text), the original message alone."""
    if isinstance(error, OSError) and error.filename:
        text = f"{error.filename}: {error.strerror or error}"
    else:
        text = str(error)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
