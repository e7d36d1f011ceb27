"""README's examples run as written (those needing a framework run where it is installed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support import framework

README = Path(__file__).resolve().parents[1] / "README.md"
FRAMEWORK_IMPORT = re.compile(r"^import (torch|jax|keras|flax)\b", flags=re.M)
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(block, tmp_path, monkeypatch):
    for name in FRAMEWORK_IMPORT.findall(block):
        framework(name)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, str(README), "exec"), {})


def test_readme_has_the_numpy_example():
    assert any(not FRAMEWORK_IMPORT.search(block) for block in BLOCKS)
