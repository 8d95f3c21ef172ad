"""Import heavy optional integrations of third-party packages without dragging torch in.

``textxfer baseline`` never needs torch, but two libraries import it as a side effect: ``evaluate``
(through ``transformers.pipelines``, for pipeline evaluators textxfer does not use) and ``skops.io``
(which walks every scikit-learn module, including an array-API shim for torch). Importing torch costs
5–10 s on a small machine, so those imports run with the offending module hidden — it then looks
uninstalled, and both libraries handle that. Once torch is loaded anyway, nothing is hidden.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType


def import_hiding(name: str, hidden: str, preload: tuple[str, ...] = ()) -> ModuleType:
    """Import module ``name`` while module ``hidden`` appears not to be installed.

    ``preload`` modules are imported first, normally: they inspect ``sys.modules`` for torch at import
    time and would misread the hidden placeholder.
    """
    if name in sys.modules or hidden in sys.modules or "torch" in sys.modules:
        return importlib.import_module(name)
    for module in preload:
        importlib.import_module(module)
    sys.modules[hidden] = None  # type: ignore[assignment]  # makes `import hidden` raise ImportError
    try:
        return importlib.import_module(name)
    finally:
        if sys.modules.get(hidden, ModuleType("sentinel")) is None:
            del sys.modules[hidden]


def evaluate_module() -> ModuleType:
    """``evaluate``, imported without ``transformers.pipelines`` (and so without torch)."""
    return import_hiding("evaluate", "transformers.pipelines")


def skops_io() -> ModuleType:
    """``skops.io``, imported without torch."""
    return import_hiding("skops.io", "torch", preload=("scipy.stats", "sklearn.base"))
