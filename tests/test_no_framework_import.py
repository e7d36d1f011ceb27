"""`import unirnn` loads no framework (the core is numpy-only; backends load lazily)."""

from __future__ import annotations

import subprocess
import sys

FRAMEWORKS = ("torch", "tensorflow", "keras", "jax", "flax", "onnx", "onnxruntime")


def _frameworks_loaded_by(code: str) -> str:
    """The frameworks in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    code += f"\nprint(' '.join(m for m in {FRAMEWORKS!r} if m in sys.modules))\n"
    result = subprocess.run([sys.executable, "-c", "import sys\n" + code],
                            capture_output=True, text=True, check=True)
    return result.stdout.strip()


def test_import_unirnn_loads_no_framework():
    assert _frameworks_loaded_by(
        "import unirnn, numpy as np\n"
        "spec = unirnn.gru(3, 4)\n"
        "unirnn.build(spec, 'numpy')(np.zeros((1, 2, 3)))"
    ) == ""


def test_import_unirnn_layouts_loads_no_framework():
    """Every layout module is numpy only: importing all of them loads no framework."""
    assert _frameworks_loaded_by(
        "import pkgutil, importlib, unirnn.layouts as layouts\n"
        "for info in pkgutil.iter_modules(layouts.__path__):\n"
        "    importlib.import_module('unirnn.layouts.' + info.name)"
    ) == ""
