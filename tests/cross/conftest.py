"""Cross-backend suite: every framework installed, one process per Keras backend.

Hypothesis profiles: ``ci`` (default, bounded for a 2-core machine) and ``nightly``
(select with ``HYPOTHESIS_PROFILE=nightly``).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=8, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "nightly", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# float64 everywhere JAX runs (Flax, and Keras on JAX); set before jax is imported.
os.environ.setdefault("JAX_ENABLE_X64", "1")
