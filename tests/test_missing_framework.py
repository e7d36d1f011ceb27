"""Without a framework, what needs it says which extra to install.

Each case runs in a subprocess where the frameworks are unimportable: ``sys.modules[name]
= None`` is Python's own mark for "this module cannot be imported" (``import`` raises
ModuleNotFoundError, ``importlib.util.find_spec`` returns None), exactly as on a machine
where the framework was never installed.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HIDE = (
    "import sys\n"
    "for name in ('torch', 'keras', 'tensorflow', 'jax', 'jaxlib', 'flax', 'h5py'):\n"
    "    sys.modules[name] = None\n"
    "import unirnn\n"
    "spec = unirnn.gru(3, 4)\n"
    "weights = unirnn.init_weights(spec)\n"
)

CASES = {
    "to_torch": ("unirnn.to_torch", "unirnn.to_torch needs torch", "torch"),
    "from_torch": ("unirnn.from_torch", "unirnn.from_torch needs torch", "torch"),
    "to_keras": ("unirnn.to_keras", "unirnn.to_keras needs keras", "keras"),
    "from_keras": ("unirnn.from_keras", "unirnn.from_keras needs keras", "keras"),
    "build-torch": ("unirnn.build(spec, 'torch')", "backend 'torch' needs torch", "torch"),
    "build-keras": ("unirnn.build(spec, 'keras')", "backend 'keras' needs keras", "keras"),
    "build-flax": ("unirnn.build(spec, 'flax')", "backend 'flax' needs flax", "flax"),
    "port-to-torch": ("unirnn.port((spec, weights), to='torch')", "backend 'torch' needs torch",
                      "torch"),
    "port-a-pt-file": ("open('m.pt', 'wb').write(b'x'); unirnn.port('m.pt', to='numpy')",
                       "reading 'm.pt' (a torch file) needs torch", "torch"),
    "port-a-keras-file": ("open('m.keras', 'wb').write(b'x'); unirnn.port('m.keras', to='numpy')",
                          "reading 'm.keras' (a Keras file) needs keras", "keras"),
    "port-a-msgpack-file": ("open('m.msgpack', 'wb').write(b'x'); "
                            "unirnn.port('m.msgpack', to='numpy')",
                            "reading 'm.msgpack' (a Flax file) needs flax", "flax"),
}


def _run(code: str, cwd) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", HIDE + code], capture_output=True, text=True,
                          cwd=cwd, check=False)


@pytest.mark.parametrize("case", list(CASES))
def test_missing_framework_names_the_extra(case, tmp_path):
    expression, message, extra = CASES[case]
    code = (
        "try:\n"
        f"    {expression}\n"
        "except ImportError as err:\n"
        "    print(type(err).__name__, err)\n"
        "else:\n"
        "    print('no error')\n"
    )
    result = _run(code, tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout.strip()
    assert out.startswith("ImportError ") and message in out, out
    assert f"install it with: pip install 'unirnn[{extra}]'" in out, out
    assert "No module named" not in out and "halted" not in out, out


@pytest.mark.parametrize(("suffix", "extra"), [("pt", "torch"), ("keras", "keras"),
                                               ("weights.h5", "keras"), ("msgpack", "flax")])
def test_convert_without_the_framework(suffix, extra, tmp_path):
    code = (
        "unirnn.save('m.safetensors', spec, weights)\n"
        "from unirnn.tools.cli import main\n"
        f"sys.exit(main(['convert', 'm.safetensors', 'out.{suffix}']))\n"
    )
    result = _run(code, tmp_path)
    assert result.returncode == 2
    assert f"pip install 'unirnn[{extra}]'" in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_numpy_still_works_without_frameworks(tmp_path):
    code = (
        "import numpy as np\n"
        "out, h = unirnn.build(spec, 'numpy', weights)(np.ones((1, 2, 3)))\n"
        "print(out.shape)\n"
    )
    result = _run(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(1, 2, 4)"


def test_a_folder_named_like_a_framework_is_not_the_framework(tmp_path, monkeypatch):
    """tests/torch on sys.path (pytest's pythonpath) is a namespace package, not torch."""
    from unirnn.backends import framework_installed

    (tmp_path / "unirnn_fake_framework").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    assert not framework_installed("unirnn_fake_framework")
    assert framework_installed("numpy")
    assert not framework_installed("unirnn_no_such_framework")
