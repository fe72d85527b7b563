"""The module notebook is the source of truth: it must run top to bottom in a real Jupyter
kernel (its inline tests and measured analyses included), and the committed package file
must be exactly what exporting it produces."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tito(*args, timeout):
    return subprocess.run([sys.executable, "-m", "tito", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_exported_package_matches_notebook():
    result = tito("test", "18_compression", "--check-export", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_notebook_runs_top_to_bottom_in_a_kernel():
    result = tito("test", "18_compression", "--notebook-only", timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
