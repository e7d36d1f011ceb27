"""Files are never clobbered or lost: no-clobber publishing, kept permissions, symlinks
written through, staging removed on every error and signal, and by the next run after a kill."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import unirnn
from unirnn._file import destination, publish, staging, write_atomic
from unirnn.tools.cli import main

SPEC = unirnn.gru(3, 4)


def _staged(folder: Path, data: bytes) -> Path:
    path = folder / "file"
    path.write_bytes(data)
    return path


def _leftovers(folder: Path, name: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{name}"))


def test_publish_without_overwrite_refuses_an_existing_file(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with staging(target) as folder:
        with pytest.raises(FileExistsError, match="out.bin' exists; pass --force"):
            publish(_staged(folder, b"new"), target, overwrite=False)
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path, "out.bin") == []


def test_concurrent_publishers_to_one_new_name_exactly_one_wins(tmp_path):
    """The check is the link itself, so it holds however the publishers interleave."""
    target = tmp_path / "same.bin"
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def publisher(k: int) -> None:
        with staging(target) as folder:
            staged = _staged(folder, f"writer {k}".encode())
            barrier.wait()
            try:
                publish(staged, target, overwrite=False)
                outcomes.append(f"won {k}")
            except FileExistsError:
                outcomes.append("refused")

    threads = [threading.Thread(target=publisher, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [o for o in outcomes if o.startswith("won")]
    assert len(winners) == 1 and outcomes.count("refused") == 7
    assert target.read_bytes() == f"writer {winners[0].split()[1]}".encode()
    assert _leftovers(tmp_path, "same.bin") == []


def test_two_cli_converts_to_one_new_destination(tmp_path):
    """Two processes racing to one new name: one writes it, the other exits 2 and says so."""
    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    unirnn.save(first, SPEC, unirnn.init_weights(SPEC, seed=1))
    other = unirnn.gru(3, 4, activations={"z": "gelu"})
    unirnn.save(second, other, unirnn.init_weights(other, seed=2))
    dst = tmp_path / "same.safetensors"
    runs = [subprocess.Popen([sys.executable, "-m", "unirnn", "convert", str(src), str(dst)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for src in (first, second)]
    results = [(run.wait(), run.stderr.read()) for run in runs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "same.safetensors' exists" in loser and "Traceback" not in loser
    assert unirnn.load(dst)[0] in (SPEC, other)
    assert _leftovers(tmp_path, "same.safetensors") == []


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o444])
def test_overwriting_keeps_the_permission_bits(tmp_path, mode):
    path = tmp_path / "m.safetensors"
    unirnn.save(path, SPEC, unirnn.init_weights(SPEC))
    os.chmod(path, mode)
    unirnn.save(path, SPEC, unirnn.init_weights(SPEC, seed=3))
    assert stat.S_IMODE(os.stat(path).st_mode) == mode
    np.testing.assert_array_equal(unirnn.load(path)[1]["layer0.forward.w_x"],
                                  unirnn.init_weights(SPEC, seed=3)["layer0.forward.w_x"])


def test_cli_force_keeps_the_permission_bits(tmp_path):
    src, dst = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    unirnn.save(src, SPEC, unirnn.init_weights(SPEC))
    unirnn.save(dst, SPEC, unirnn.init_weights(SPEC, seed=5))
    os.chmod(dst, 0o600)
    assert main(["convert", str(src), str(dst), "--force"]) == 0
    assert stat.S_IMODE(os.stat(dst).st_mode) == 0o600
    assert unirnn.load(dst)[1]["layer0.forward.w_x"].tobytes() == \
        unirnn.init_weights(SPEC)["layer0.forward.w_x"].tobytes()


def test_new_file_gets_the_umask_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        unirnn.save(tmp_path / "m.safetensors", SPEC, unirnn.init_weights(SPEC))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "m.safetensors").st_mode) == 0o640


def test_saving_to_a_symlink_writes_its_target(tmp_path):
    real = tmp_path / "store" / "model.safetensors"
    real.parent.mkdir()
    unirnn.save(real, SPEC, unirnn.init_weights(SPEC))
    os.chmod(real, 0o600)
    link = tmp_path / "current.safetensors"
    link.symlink_to(real)
    unirnn.save(link, SPEC, unirnn.init_weights(SPEC, seed=9))
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o600
    assert unirnn.load(real)[1]["layer0.forward.b_x"].tobytes() == \
        unirnn.init_weights(SPEC, seed=9)["layer0.forward.b_x"].tobytes()
    # staging went beside the target, and went
    assert _leftovers(real.parent, "model.safetensors") == []


def test_a_directory_destination_is_an_error(tmp_path, capsys):
    src = tmp_path / "a.safetensors"
    unirnn.save(src, SPEC, unirnn.init_weights(SPEC))
    folder = tmp_path / "out"
    folder.mkdir()
    assert main(["convert", str(src), str(folder), "--to", "unirnn", "--force"]) == 2
    assert "is a directory; expected a file name" in capsys.readouterr().err
    assert list(folder.iterdir()) == []
    with pytest.raises(IsADirectoryError):
        destination(folder)


def test_staging_is_removed_when_the_write_fails(tmp_path):
    target = tmp_path / "m.bin"
    with pytest.raises(RuntimeError):
        with staging(target) as folder:
            _staged(folder, b"half")
            raise RuntimeError("the writer failed")
    assert list(tmp_path.iterdir()) == []


def test_staging_left_by_a_killed_run_is_removed_by_the_next(tmp_path):
    src = tmp_path / "a.safetensors"
    unirnn.save(src, SPEC, unirnn.init_weights(SPEC))
    # a run that was killed: a staging folder whose process no longer exists
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = tmp_path / f".b.safetensors.unirnn-staging-{dead}-x1y2"
    stale.mkdir()
    (stale / "b.safetensors").write_bytes(b"partial")
    # a run still going (this process's parent stands in for it) is left alone
    live = tmp_path / f".b.safetensors.unirnn-staging-{os.getppid()}-z3"
    live.mkdir()
    assert main(["convert", str(src), str(tmp_path / "b.safetensors")]) == 0
    assert not stale.exists() and live.exists()


def test_a_killed_convert_leaves_staging_the_next_run_removes(tmp_path):
    """SIGKILL cannot be caught: its staging stays until the next run for that name."""
    src = tmp_path / "a.safetensors"
    unirnn.save(src, SPEC, unirnn.init_weights(SPEC))
    dst = tmp_path / "b.safetensors"
    script = (
        "import os, signal, sys\n"
        "import unirnn.porting.port as port\n"
        "def stuck(staged):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "real = port.write\n"
        "port.write = lambda *a, **k: real(*a, **{**k, 'before_publish': stuck})\n"
        "from unirnn.tools.cli import main\n"
        f"sys.exit(main(['convert', {str(src)!r}, {str(dst)!r}]))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == -signal.SIGKILL
    assert not dst.exists() and len(_leftovers(tmp_path, "b.safetensors")) == 1
    assert main(["convert", str(src), str(dst)]) == 0
    assert _leftovers(tmp_path, "b.safetensors") == [] and unirnn.load(dst)[0] == SPEC


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_catchable_signal_during_convert_removes_staging(tmp_path, signum):
    src = tmp_path / "a.safetensors"
    unirnn.save(src, SPEC, unirnn.init_weights(SPEC))
    dst = tmp_path / "b.safetensors"
    script = (
        "import os, sys\n"
        "import unirnn.porting.port as port\n"
        "def stuck(staged):\n"
        "    assert staged.exists()\n"
        f"    os.kill(os.getpid(), {int(signum)})\n"
        "real = port.write\n"
        "port.write = lambda *a, **k: real(*a, **{**k, 'before_publish': stuck})\n"
        "from unirnn.tools.cli import main\n"
        f"sys.exit(main(['convert', {str(src)!r}, {str(dst)!r}]))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 128 + signum, run.stderr
    assert "Traceback" not in run.stderr
    assert not dst.exists()
    assert _leftovers(tmp_path, "b.safetensors") == []


def test_messages_name_the_destination_not_the_staging(tmp_path, capsys, monkeypatch):
    import unirnn.porting.port as port

    src = tmp_path / "a.safetensors"
    unirnn.save(src, SPEC, unirnn.init_weights(SPEC))

    def broken(staged):
        raise unirnn.FileFormatError(f"{str(staged)!r} does not read back")

    real = port.write
    monkeypatch.setattr(port, "write", lambda *a, **k: real(*a, **{**k,
                                                                 "before_publish": broken}))
    dst = tmp_path / "b.safetensors"
    assert main(["convert", str(src), str(dst)]) == 2
    err = capsys.readouterr().err
    assert str(dst) in err and "staging" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors"]


def test_write_atomic_no_clobber(tmp_path):
    path = tmp_path / "x.bin"
    write_atomic(path, b"one", overwrite=False)
    with pytest.raises(FileExistsError):
        write_atomic(path, b"two", overwrite=False)
    assert path.read_bytes() == b"one"
    write_atomic(path, b"three")
    assert path.read_bytes() == b"three"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]


def test_save_without_overwrite(tmp_path):
    path = tmp_path / "m.safetensors"
    unirnn.save(path, SPEC, unirnn.init_weights(SPEC), overwrite=False)
    with pytest.raises(FileExistsError, match="exists"):
        unirnn.save(path, SPEC, unirnn.init_weights(SPEC, seed=1), overwrite=False)
    assert unirnn.load(path)[1]["layer0.forward.w_x"].tobytes() == \
        unirnn.init_weights(SPEC)["layer0.forward.w_x"].tobytes()
