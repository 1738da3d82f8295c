"""Loading a script of the repository (``benchmarks/``, ``examples/``) as a module, for the tests
of its parts."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_script(path: Path, name: str, siblings: bool = False) -> ModuleType:
    """The script at ``path`` run as module ``name``, registered in ``sys.modules`` (dataclasses
    look their module up while the file runs). ``siblings``: put its folder on ``sys.path``
    first, for a script that imports a module beside it (``masked_common``)."""
    if siblings and str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
