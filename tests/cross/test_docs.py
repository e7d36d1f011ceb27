"""README's framework examples, with every framework installed."""

from __future__ import annotations

from test_readme import BLOCKS, test_readme_example_runs  # noqa: F401
