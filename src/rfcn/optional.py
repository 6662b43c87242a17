"""Optional dependencies: the extras of ``pip install "rfcn[...]"``, one line when one is missing.

``pip install rfcn`` leaves out ONNX export and runtime (extra ``onnx``) and TensorBoard logging
(extra ``tensorboard``). A feature that needs one imports it through :func:`require`, so that a
missing package is a :class:`~rfcn.errors.UserError` naming the extra to install, never a
``ModuleNotFoundError`` traceback. Torch-free (the ONNX detection path imports it).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from rfcn.errors import UserError, first_line


def require(module: str, extra: str, source: str) -> ModuleType:
    """Import ``module``, which the extra ``extra`` installs.

    Args:
        module: the module to import, e.g. ``"onnx"`` or ``"torch.utils.tensorboard"``.
        extra: the extra of the ``rfcn`` package that installs it, e.g. ``"onnx"``.
        source: what needs it, named first in the error (a command, a config key, a file).

    Raises:
        UserError: ``source: <package> is not installed: pip install "rfcn[<extra>]"`` (or
            ``cannot be imported (<why>)`` for an installed package that fails to import).
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        problem = f"{exc.name or module} is not installed"
    except ImportError as exc:
        problem = f"{module} cannot be imported ({first_line(exc)})"
    raise UserError(source, f'{problem}: pip install "rfcn[{extra}]"')
