"""Cross-backend suite: every framework installed, one process per Keras backend.

Hypothesis profiles (``ci`` by default, ``nightly``) are registered in tests/conftest.py.
"""

from __future__ import annotations

import os

# float64 everywhere JAX runs (Flax, and Keras on JAX); set before jax is imported.
os.environ.setdefault("JAX_ENABLE_X64", "1")
