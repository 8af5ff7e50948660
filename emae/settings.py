"""Config dataclasses as plain data and as command-line flags, shared by every command's config.

A config class is a dataclass whose fields are str, int, float, bool, ``X | None`` or tuples of floats.
It is written to JSON as a plain dict (tuples as lists) and read back with every value type-checked.
"""
from __future__ import annotations

import argparse
import json
import types
import typing
from dataclasses import fields
from pathlib import Path

import torch

from emae.errors import EmaeError


def base_type(hint) -> type:
    """``int`` for ``int``, ``float | None`` -> ``float``, ``tuple[float, ...]`` -> ``tuple``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) or hint


def convert(name: str, hint, value, source: str):
    """Check (and where lossless, convert) one value read from a file or a flag."""
    if value is None:
        if type(None) not in typing.get_args(hint):
            raise EmaeError(f"{source}: {name} must not be null")
        return None
    kind = base_type(hint)
    if kind is tuple:
        if not isinstance(value, (list, tuple)) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise EmaeError(f"{source}: {name} must be a list of numbers, got {value!r}")
        return tuple(float(v) for v in value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise EmaeError(f"{source}: {name} must be {kind.__name__}, got {type(value).__name__} {value!r}")
    return value


def to_dict(config) -> dict:
    return {f.name: list(v) if isinstance(v := getattr(config, f.name), tuple) else v for f in fields(config)}


def from_dict(cls, values: dict, source: str = "config"):
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - {f.name for f in fields(cls)})
    if unknown:
        raise EmaeError(f"{source}: unknown config key(s) {unknown}")
    return cls(**{k: convert(k, hints[k], v, source) for k, v in values.items()})


def load_config_file(path: str | Path) -> dict:
    """Read a YAML or JSON file of config keys (YAML with ``safe_load``: no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise EmaeError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise EmaeError(f"{path}: not a text file (a config file is YAML or JSON)") from None
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise EmaeError(f"{path}: not valid YAML: {getattr(e, 'problem', None) or e}{where}") from None
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise EmaeError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(values, dict):
        raise EmaeError(f"{path}: a config file must hold a mapping of keys to values")
    return values


def read_json(path: str | Path):
    """A JSON file a run wrote (its settings or state); a damaged one is an error naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise EmaeError(f"{path}: not valid JSON ({e}); remove the file or choose another output folder") from None


def add_arguments(parser: argparse.ArgumentParser, cls, help_for: dict[str, str] | None = None) -> None:
    """``--config FILE`` and one ``--flag`` per field; a flag not given stays out of the namespace so that it
    does not override a preset or a file."""
    parser.add_argument("--config", dest="config_file", help="YAML or JSON file of config keys")
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kind = base_type(hints[f.name])
        help_text = (help_for or {}).get(f.name, f"(default: {f.default!r}, or the preset's)")
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=help_text)
        elif kind is tuple:
            parser.add_argument(flag, dest=f.name, type=float, nargs="+", default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, type=kind, default=argparse.SUPPRESS, help=help_text)


def given_values(cls, args: argparse.Namespace) -> dict:
    """The fields of ``cls`` given on the command line."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}


def resolve(cls, args: argparse.Namespace, preset_values) -> dict:
    """defaults < preset (``preset_values(name)``) < ``--config`` file < explicit flags, as a dict."""
    values = {}
    if getattr(args, "config_file", None):
        values = load_config_file(args.config_file)
        from_dict(cls, values, source=str(args.config_file))  # an unknown key or a wrong type names the file
    values.update(given_values(cls, args))
    merged = preset_values(values.get("preset", cls.preset))
    merged.update(values)
    return merged


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise EmaeError("device 'cuda' asked for, but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise EmaeError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for an ``amp`` setting, or None for full precision."""
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}[amp]
