"""nox sessions: one test session per backend, each with only that framework installed,
and the cross-backend session with every framework.

    nox                         # every session once (what CI runs)
    nox -s "tests(torch)"       # one backend
    nox -s "tests(onnx)"        # ONNX both ways, judged by onnxruntime
    nox -s cross                # the cross-backend equivalence suite, porting, CLI, demo
    nox -s lint typecheck
    nox -s docs                 # the documentation site, built strictly (mkdocs.yml)
    HYPOTHESIS_PROFILE=nightly nox -s cross   # many more drawn examples (tests/conftest.py)

torch is pinned through constraints.txt so no session pulls a multi-GB CUDA build.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = False
nox.options.error_on_missing_interpreters = True

CONSTRAINTS = ("-c", "constraints.txt")
CORE_TESTS = [
    "tests",
    "--ignore=tests/torch",
    "--ignore=tests/flax",
    "--ignore=tests/keras",
    "--ignore=tests/cross",
    "--ignore=tests/onnx",
]

# backend id -> (what to pip install, pytest arguments, extra environment)
BACKENDS = {
    "numpy": ([".[test]"], CORE_TESTS, {}),
    "torch": ([".[torch,test]"], ["tests/torch"], {"UNIRNN_REQUIRE": "torch"}),
    "flax": ([".[flax,test]"], ["tests/flax"], {"UNIRNN_REQUIRE": "jax,flax"}),
    "onnx": ([".[onnx,test]"], ["tests/onnx"], {"UNIRNN_REQUIRE": "onnx,onnxruntime"}),
    "keras-tensorflow": (
        [".[keras,test]"],
        ["tests/keras"],
        {"KERAS_BACKEND": "tensorflow", "UNIRNN_REQUIRE": "keras,tensorflow"},
    ),
    "keras-jax": (
        [".[test]", "keras>=3.5", "jax>=0.4.30"],
        ["tests/keras"],
        {"KERAS_BACKEND": "jax", "UNIRNN_REQUIRE": "keras,jax"},
    ),
    "keras-torch": (
        [".[torch,test]", "keras>=3.5"],
        ["tests/keras"],
        {"KERAS_BACKEND": "torch", "UNIRNN_REQUIRE": "keras,torch"},
    ),
}
CROSS_ENV = {"UNIRNN_REQUIRE": "torch,jax,flax,keras,tensorflow"}


@nox.session
@nox.parametrize("backend", list(BACKENDS), ids=list(BACKENDS))
def tests(session: nox.Session, backend: str) -> None:
    """Run one backend's tests with only that backend's framework installed.

    `numpy` runs the core (spec, weights, cells, files, CLI) with no framework at all;
    `onnx` the ONNX export and import with only numpy, onnx and onnxruntime.
    """
    packages, pytest_args, env = BACKENDS[backend]
    session.install(*CONSTRAINTS, *packages)
    session.run("pytest", *pytest_args, *session.posargs, env=env)


@nox.session
def cross(session: nox.Session) -> None:
    """Every framework installed: the cross-backend equivalence suite, porting, docs'
    examples, and the `unirnn` commands (`demo`, `check`, `convert`) as a user runs them.

    Keras picks its backend once per process: the whole suite runs with Keras on
    TensorFlow, then the Keras tests again on JAX and on torch, each in its own process.
    `HYPOTHESIS_PROFILE=nightly nox -s cross` draws many more examples.
    """
    # the exporters whose ONNX files tests/cross/test_onnx_exporters.py reads
    session.install(*CONSTRAINTS, ".[all,test,plot]", "onnxscript", "tf2onnx")
    session.run("pytest", "tests/cross", *session.posargs,
                env={**CROSS_ENV, "KERAS_BACKEND": "tensorflow"})
    for keras_backend in ("jax", "torch"):
        session.run("pytest", "tests/cross", "-k", "keras", *session.posargs,
                    env={**CROSS_ENV, "KERAS_BACKEND": keras_backend})


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the package, tests, benchmarks, examples and this file."""
    session.install("ruff")
    session.run("ruff", "check", "unirnn", "tests", "benchmarks", "examples", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy over the package (frameworks' types are not required)."""
    session.install(*CONSTRAINTS, ".", "mypy")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site (mkdocs.yml) with ``--strict``: a warning, a broken
    link or anchor, or a page left out of the navigation fails it. The API reference is
    read from the source by mkdocstrings, so no framework is installed; nothing is
    fetched but the packages. ``mkdocs serve`` previews the site while you edit."""
    session.install(*CONSTRAINTS, ".[docs]")
    site = session.create_tmp()
    session.run("mkdocs", "build", "--strict", "--site-dir", f"{site}/site")
