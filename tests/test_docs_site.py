"""The documentation site holds together without building it (``nox -s docs`` builds it
strictly): every page is in the navigation and in README's list, relative links point at
pages that exist, the examples of the pages unirnn's site adds run as written, and so do
the docstrings' examples of the public namespace (what the API reference shows)."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest
from support import framework as _import_framework

import unirnn
from unirnn.backends import framework_installed


def framework(name: str):
    """As ``support.framework``, but a namespace package (``tests/torch`` on the path, with
    no torch installed) counts as missing, as unirnn's backends read it."""
    if not framework_installed(name) and name not in __import__("support").REQUIRED:
        pytest.skip(f"{name} is not installed")
    return _import_framework(name)

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(path.name for path in DOCS.glob("*.md"))
NAV = re.findall(r"^\s*-\s+(?:[^:\n]+:\s+)?([\w./-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(),
                 flags=re.M)
IMPORTS = re.compile(r"^(?:>>> )?\s*import ([\w., ]+)$", flags=re.M)
TARGETS = re.compile(r"""\b(?:to|backend)=["'](\w+)["']""")
PACKAGES = {"torch": ["torch"], "keras": ["keras"], "jax": ["jax"], "flax": ["jax", "flax"],
            "onnx": ["onnx", "onnxruntime"], "onnxruntime": ["onnxruntime"]}
"""A framework (a backend or port target, or an imported module) -> what it needs."""


def _frameworks(text: str) -> list[str]:
    """The packages an example needs: the frameworks it imports or builds or ports to."""
    names = {name.strip().split(".")[0] for line in IMPORTS.findall(text)
             for name in line.split(",")} | set(TARGETS.findall(text))
    return sorted({package for name in names for package in PACKAGES.get(name, [])})


RUN_PAGES = ("index.md", "numpy.md", "spec.md")
"""Pages whose ```python blocks that import unirnn are examples that run on their own."""
BLOCKS = [(page, i, block) for page in RUN_PAGES
          for i, block in enumerate(re.findall(r"```python\n(.*?)```",
                                               (DOCS / page).read_text(), flags=re.S))
          if "import unirnn" in block]


def test_every_page_is_in_the_navigation():
    assert sorted(set(NAV)) == PAGES, "mkdocs.yml's nav and docs/*.md differ"
    assert len(NAV) == len(set(NAV)), "a page is in mkdocs.yml's nav twice"


def test_readme_lists_every_page():
    readme = (ROOT / "README.md").read_text()
    unlisted = [page for page in PAGES if f"(docs/{page})" not in readme]
    assert unlisted == [], f"README's Documentation section does not link {unlisted}"


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_point_at_pages(page):
    text = re.sub(r"```.*?```", "", (DOCS / page).read_text(), flags=re.S)
    targets = re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", text)
    missing = [t for t in targets if "://" not in t and not (DOCS / page).parent.joinpath(t)
               .is_file()]
    assert missing == [], f"{page} links to missing pages: {missing}"


@pytest.mark.parametrize("page, index, block", BLOCKS,
                         ids=[f"{page}-block{index}" for page, index, _ in BLOCKS])
def test_page_example_runs(page, index, block, tmp_path, monkeypatch):
    for name in _frameworks(block):
        framework(name)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, str(DOCS / page), "exec"), {})


LAZY = {name: module.rsplit(".", 1)[-1] for name, module in unirnn._LAZY.items()}
"""Porting functions -> the framework their module imports (``unirnn.to_torch``: torch)."""
DOCUMENTED = [name for name in unirnn.__all__ if name in LAZY or callable(getattr(unirnn, name))]


@pytest.mark.parametrize("name", DOCUMENTED)
def test_docstring_examples_run(name):
    for package in PACKAGES.get(LAZY.get(name, ""), []):
        framework(package)
    obj = getattr(unirnn, name)
    tests = doctest.DocTestFinder().find(obj, f"unirnn.{name}", globs={}, module=False)
    for package in sorted({p for test in tests for p in _frameworks(test.docstring or "")}):
        framework(package)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report: list[str] = []
    for test in tests:
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)
