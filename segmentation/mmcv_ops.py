"""A stand-in for mmcv's compiled ops when mmcv-lite is installed.

mmcv-lite ships ``mmcv.ops`` without its compiled extension ``mmcv._ext``, and ``mmcv.ops`` (which
mmsegmentation imports at start-up) fails without it. :func:`install` puts a placeholder module under that
name. Every attribute of the placeholder is a function that raises :class:`NotImplementedError` naming the
op, so ``import mmseg.models`` works and UperNet + ViT (which use no compiled op) train and evaluate,
while a model that needs a compiled op (deformable convolution, CARAFE, point sampling, ...) fails at its
first call with an error that says why. With full mmcv installed, :func:`install` does nothing.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

EXT_NAME = "mmcv._ext"


class MissingOps(types.ModuleType):
    """The placeholder module: any public attribute is an op that raises when called."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _missing_op(name)


def _missing_op(name: str):
    def op(*args, **kwargs):
        raise NotImplementedError(f"mmcv op {name} is not available: mmcv-lite is installed without compiled "
                                  f"ops; install full mmcv to use it")

    op.__name__ = op.__qualname__ = name
    return op


def install() -> bool:
    """Register the placeholder as ``mmcv._ext`` unless the real extension exists.

    Returns True when the placeholder is in use (now or from an earlier call). Call it before importing
    ``mmcv.ops`` or anything of ``mmseg``.
    """
    module = sys.modules.get(EXT_NAME)
    if module is not None:
        return isinstance(module, MissingOps)
    if importlib.util.find_spec(EXT_NAME) is not None:
        return False
    module = MissingOps(EXT_NAME, __doc__)
    module.__spec__ = importlib.machinery.ModuleSpec(EXT_NAME, None)
    sys.modules[EXT_NAME] = module
    return True
