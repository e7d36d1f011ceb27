"""`import unirnn` loads no framework (the core is numpy-only; backends load lazily)."""

from __future__ import annotations

import subprocess
import sys

FRAMEWORKS = ("torch", "tensorflow", "keras", "jax", "flax", "onnx", "onnxruntime")


def test_import_unirnn_loads_no_framework():
    code = (
        "import sys, unirnn, numpy as np\n"
        "spec = unirnn.gru(3, 4)\n"
        "unirnn.build(spec, 'numpy')(np.zeros((1, 2, 3)))\n"
        f"print(' '.join(m for m in {FRAMEWORKS!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == ""


def test_import_unirnn_layouts_loads_no_framework():
    """Every layout module is numpy only: importing all of them loads no framework."""
    code = (
        "import sys, pkgutil, importlib, unirnn.layouts as layouts\n"
        "for info in pkgutil.iter_modules(layouts.__path__):\n"
        "    importlib.import_module('unirnn.layouts.' + info.name)\n"
        f"print(' '.join(m for m in {FRAMEWORKS!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == ""
