"""Without onnx (or onnxruntime), what needs it says which extra to install."""

from __future__ import annotations

import subprocess
import sys

import pytest

HIDE = (
    "import sys\n"
    "for name in {hidden!r}:\n"
    "    sys.modules[name] = None\n"
    "import unirnn\n"
    "spec = unirnn.gru(3, 4)\n"
    "weights = unirnn.init_weights(spec)\n"
)

CASES = {
    "to_onnx": (("onnx", "onnxruntime"), "unirnn.to_onnx(spec, weights)",
                "unirnn.to_onnx needs onnx"),
    "from_onnx": (("onnx", "onnxruntime"), "unirnn.from_onnx('m.onnx')",
                  "unirnn.from_onnx needs onnx"),
    "port-to-onnx": (("onnx", "onnxruntime"), "unirnn.port((spec, weights), to='onnx')",
                     "port(to='onnx') needs onnx"),
    "port-an-onnx-file": (("onnx", "onnxruntime"),
                          "open('m.onnx', 'wb').write(b'x'); unirnn.port('m.onnx', to='numpy')",
                          "reading 'm.onnx'"),
    "run-without-onnxruntime": (("onnxruntime",),
                                "from unirnn.porting import onnx as o; "
                                "o.run(o.to_onnx(spec, weights), weights['layer0.forward.w_x'])",
                                "running an ONNX model needs onnxruntime"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_missing_onnx_names_the_extra(case, tmp_path):
    hidden, expression, message = CASES[case]
    code = HIDE.format(hidden=hidden) + (
        "try:\n"
        f"    {expression}\n"
        "except ImportError as err:\n"
        "    print(type(err).__name__, err)\n"
        "else:\n"
        "    print('no error')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stderr
    out = result.stdout.strip()
    assert out.startswith("ImportError ") and message in out, out
    assert "install it with: pip install 'unirnn[onnx]'" in out, out
