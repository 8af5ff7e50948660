"""Config dataclasses as plain data and as command-line flags, shared by every command's config.

A config class is a dataclass whose fields are str, int, float, bool, ``X | None`` or tuples of one of
str, int or float (``tuple[float, ...]``).
It is written to JSON as a plain dict (tuples as lists) and read back with every value type-checked.
"""
from __future__ import annotations

import argparse
import json
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import ClassVar

import torch

from emae.errors import EmaeError

CONFIG_FILE = "config.json"  # a run's config, beside its outputs


def base_type(hint) -> type:
    """``int`` for ``int``, ``float | None`` -> ``float``, ``tuple[float, ...]`` -> ``tuple``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) or hint


def item_type(hint) -> type:
    """The type of a tuple field's items: ``tuple[str, ...]`` -> ``str``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_args(hint)[0]


def convert(name: str, hint, value, source: str):
    """Check (and where lossless, convert) one value read from a file or a flag."""
    if value is None:
        if type(None) not in typing.get_args(hint):
            raise EmaeError(f"{source}: {name} must not be null")
        return None
    kind = base_type(hint)
    if kind is tuple:
        item = item_type(hint)
        if not isinstance(value, (list, tuple)) or not all(_is(v, item) for v in value):
            what = {float: "numbers", int: "integers", str: "strings"}[item]
            raise EmaeError(f"{source}: {name} must be a list of {what}, got {value!r}")
        return tuple(item(v) for v in value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise EmaeError(f"{source}: {name} must be {kind.__name__}, got {type(value).__name__} {value!r}")
    return value


def _is(value, item: type) -> bool:
    """Whether ``value`` is a valid item of a ``tuple[item, ...]`` field (an int is a valid float)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float)) if item is float else isinstance(value, item)


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


def add_arguments(parser: argparse.ArgumentParser, cls, help_for: dict[str, str] | None = None,
                  file_flag: str = "--config") -> None:
    """``--config FILE`` (spelled ``file_flag`` where a field is named ``config``) and one ``--flag`` per field; a
    flag not given stays out of the namespace so that it does not override a preset or a file."""
    parser.add_argument(file_flag, dest="config_file", metavar="FILE", help="YAML or JSON file of config keys")
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kind = base_type(hints[f.name])
        help_text = (help_for or {}).get(f.name, f"(default: {f.default!r}, or the preset's)")
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=help_text)
        elif kind is tuple:
            parser.add_argument(flag, dest=f.name, type=item_type(hints[f.name]), nargs="+", default=argparse.SUPPRESS,
                                help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, type=kind, default=argparse.SUPPRESS, help=help_text)


def given_values(cls, args: argparse.Namespace) -> dict:
    """The fields of ``cls`` given on the command line."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}


def resolve(cls, args: argparse.Namespace, preset_values=None) -> dict:
    """defaults < preset (``preset_values(name)``, for a config with a ``preset`` field) < ``--config`` file <
    explicit flags, as a dict."""
    values = {}
    if getattr(args, "config_file", None):
        values = load_config_file(args.config_file)
        from_dict(cls, values, source=str(args.config_file))  # an unknown key or a wrong type names the file
    values.update(given_values(cls, args))
    merged = preset_values(values.get("preset", getattr(cls, "preset", ""))) if preset_values else {}
    merged.update(values)
    return merged


def require(config, names: tuple[str, ...], file_flag: str = "--config") -> None:
    """Each of ``names`` must be set (not empty) in ``config``; the error names the flag and the file key."""
    for name in names:
        if not getattr(config, name):
            flag = "--" + name.replace("_", "-")
            raise EmaeError(f"{name} is required: give {flag} or the key '{name}' in {file_flag}")


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


class CommandConfig:
    """The base of a command's config dataclass: plain data (:meth:`to_dict`, :meth:`from_dict`), one flag per
    field (:meth:`add_arguments`) and the values resolved as defaults < preset < ``--config`` file < explicit
    flags, validated (:meth:`resolve`). A subclass states its checks in :meth:`validate`, its flags' help in
    ``help_for`` and, where it has presets of its own, their values in :meth:`preset_values`."""

    help_for: ClassVar[dict[str, str]] = {}  # field -> help text of its flag, the default appended

    @classmethod
    def preset_values(cls, name: str) -> dict:
        """The values preset ``name`` sets: none, for a config without presets of its own."""
        return {}

    def validate(self):
        """``self`` if its values make a run, else an EmaeError naming the bad one."""
        return self

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, values: dict, source: str = "config"):
        return from_dict(cls, values, source)

    def save(self, folder: str | Path) -> Path:
        """Write :meth:`to_dict` as ``folder/config.json`` (its folder created); returns its path."""
        path = Path(folder) / CONFIG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, preset: str = "") -> None:
        """``--config FILE`` and one ``--flag`` per field, its help ending in its default (``preset``'s value where
        the command resolves with that preset)."""
        defaults = {**to_dict(cls()), **cls.preset_values(preset)}
        add_arguments(parser, cls, {name: f"{cls.help_for.get(name, '')} (default: {_shown(value)})".lstrip()
                                             for name, value in defaults.items()})

    @classmethod
    def resolve(cls, args: argparse.Namespace, preset: str = ""):
        """defaults < preset (``preset`` where the class's default names none and neither the file nor a flag
        does) < ``--config`` file < explicit flags, validated."""
        return cls.from_dict(resolve(cls, args, lambda name: cls.preset_values(name or preset))).validate()


def _shown(value) -> str:
    """A default as its flag takes it (a list as its words), escaped for argparse's help formatting."""
    text = " ".join(map(str, value)) if isinstance(value, list) else repr(value)
    return text.replace("%", "%%")
