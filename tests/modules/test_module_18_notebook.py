"""The module's notebooks are the source of truth: each (the lesson and its going-further
notebooks, listed in module.yaml) must run top to bottom in a real Jupyter kernel (inline tests
and measured analyses included), and the committed package must be exactly what exporting them
produces. Always the instructor's notebooks (--solution), never a student's workspace."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tito(*args, timeout):
    return subprocess.run([sys.executable, "-m", "tito", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_exported_package_matches_notebook():
    result = tito("test", "18_compression", "--solution", "--check-export", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_notebook_runs_top_to_bottom_in_a_kernel():
    result = tito("test", "18_compression", "--solution", "--notebook-only", timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
