"""docs/onnx.md's ```python examples run as written (numpy, onnx and onnxruntime only)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support import framework

DOC = Path(__file__).resolve().parents[2] / "docs" / "onnx.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_doc_has_an_example():
    assert BLOCKS


@pytest.mark.parametrize("block", BLOCKS, ids=[f"onnx-block{i}" for i in range(len(BLOCKS))])
def test_onnx_doc_example_runs(block, tmp_path, monkeypatch):
    framework("onnx")
    framework("onnxruntime")
    monkeypatch.chdir(tmp_path)
    exec(compile(block, str(DOC), "exec"), {})
