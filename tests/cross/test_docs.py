"""README's and docs/porting.md's examples run as written, with every framework installed.

Each ```python block of docs/porting.md runs on its own (in a fresh namespace, in a
temporary directory), so every block must be self-contained.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support import framework
from test_readme import BLOCKS, FRAMEWORK_IMPORT, test_readme_example_runs  # noqa: F401

PORTING = Path(__file__).resolve().parents[2] / "docs" / "porting.md"
PORTING_BLOCKS = re.findall(r"```python\n(.*?)```", PORTING.read_text(), flags=re.S)
IMPORTED = re.compile(r"^import ([\w., ]+)$", flags=re.M)


def _frameworks(block: str) -> set[str]:
    names = {name.strip().split(".")[0] for line in IMPORTED.findall(block)
             for name in line.split(",")}
    return names & {"torch", "jax", "keras", "flax"}


def test_porting_doc_has_examples():
    assert len(PORTING_BLOCKS) >= 5


@pytest.mark.parametrize("block", PORTING_BLOCKS,
                         ids=[f"porting-block{i}" for i in range(len(PORTING_BLOCKS))])
def test_porting_doc_example_runs(block, tmp_path, monkeypatch):
    for name in sorted(_frameworks(block) | set(FRAMEWORK_IMPORT.findall(block))):
        framework(name)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, str(PORTING), "exec"), {})
