"""Settings every test session shares.

Hypothesis profiles, chosen with the ``HYPOTHESIS_PROFILE`` environment variable:

- ``ci`` (the default): a bounded number of examples, derandomized, so a run on a 2-core
  CI machine is quick and repeatable.
- ``nightly``: many more examples from a fresh random seed each run, e.g.
  ``HYPOTHESIS_PROFILE=nightly python -m nox -s cross``.

No test hard-codes ``max_examples``; the profile decides.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=10, deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "nightly", max_examples=300, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
