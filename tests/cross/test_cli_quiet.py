"""`unirnn demo`, `check` and `convert` with every framework installed write their results
and nothing else: TensorFlow's, absl's and JAX's start-up lines stay off stderr, unless
the user asked for them. (The filter itself, and the status line on a terminal:
tests/test_console.py.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from support import framework

import unirnn
from unirnn.tools._console import is_startup_noise

START_UP = re.compile(
    r"oneDNN custom operations|absl::InitializeLog|Unable to register cu(DNN|FFT|BLAS)"
    r"|cpu_feature_guard|No GPU/TPU found|falling back to cpu|CUDA-enabled jaxlib"
    r"|^WARNING:absl:|TF-TRT Warning",
    flags=re.I | re.M,
)
"""What the frameworks print at start-up (seen with TensorFlow 2.16-2.21, JAX 0.4-0.10)."""


def _env(**extra: str) -> dict[str, str]:
    """This environment without a user's own log levels, so the defaults are tested."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "JAX_LOGGING_LEVEL")}
    return {**env, **extra}


def _unirnn(*args: str, cwd, env=None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unirnn", *args], capture_output=True,
                          text=True, cwd=cwd, env=_env() if env is None else env,
                          check=False, timeout=timeout)


def _assert_quiet(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    assert not START_UP.search(result.stderr), result.stderr
    foreign = [line for line in result.stderr.splitlines() if not line.startswith("unirnn ")]
    assert foreign == [], result.stderr
    assert "\r" not in result.stderr  # no status line: stderr is not a terminal


def test_tensorflows_start_up_lines_are_all_recognised(tmp_path):
    """What `import tensorflow` prints on its own is what the commands filter out."""
    framework("tensorflow")
    result = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True,
                            text=True, cwd=tmp_path, env=_env(), check=False, timeout=300)
    assert result.returncode == 0, result.stderr
    unrecognised = [line for line in result.stderr.splitlines(keepends=True)
                    if line.strip() and not is_startup_noise(line)]
    assert unrecognised == [], result.stderr


def test_demo_writes_only_its_results(tmp_path):
    for name in ("torch", "keras", "tensorflow", "jax", "flax"):
        framework(name)
    _assert_quiet(_unirnn("demo", cwd=tmp_path, env=_env(KERAS_BACKEND="tensorflow")))


def test_check_with_its_subprocesses_writes_only_its_results(tmp_path):
    for name in ("torch", "keras", "tensorflow", "jax", "flax"):
        framework(name)
    spec = tmp_path / "rnn.json"
    spec.write_text(unirnn.rnn(2, 3).to_json())
    result = _unirnn("check", str(spec), "--dtypes", "float64", "--no-grad", cwd=tmp_path,
                     env=_env(KERAS_BACKEND="tensorflow"))
    _assert_quiet(result)
    assert re.search(r"^(\d+) of \1 within tolerance$", result.stdout, flags=re.M)


@pytest.fixture
def small_file(tmp_path):
    spec = unirnn.lstm(2, 3)
    path = tmp_path / "m.safetensors"
    unirnn.save(path, spec, unirnn.init_weights(spec))
    return path


def test_convert_through_tensorflow_writes_only_its_results(tmp_path, small_file):
    framework("keras")
    framework("tensorflow")
    result = _unirnn("convert", str(small_file), str(tmp_path / "m.weights.h5"), cwd=tmp_path,
                     env=_env(KERAS_BACKEND="tensorflow"))
    _assert_quiet(result)


def test_a_users_tf_log_level_wins(tmp_path, small_file):
    """TF_CPP_MIN_LOG_LEVEL=0 asks for everything: what TensorFlow prints comes through."""
    framework("keras")
    framework("tensorflow")
    baseline = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True,
                              text=True, env=_env(TF_CPP_MIN_LOG_LEVEL="0"), check=False,
                              timeout=300)
    result = _unirnn("convert", str(small_file), str(tmp_path / "m.weights.h5"), cwd=tmp_path,
                     env=_env(KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="0"))
    assert result.returncode == 0, result.stdout + result.stderr
    said = {line.split("] ", 1)[-1] for line in baseline.stderr.splitlines() if line.strip()}
    missing = [text for text in said if text not in result.stderr]
    assert missing == [], result.stderr
