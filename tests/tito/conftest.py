"""Fixtures for tito's tests: a throw-away copy of ``fixture_project/`` and a runner.

``fixture_project/`` is a miniature TinyTorch checkout (pyproject with [tool.nbdev],
``modules/99_demo`` notebook, checkpoint + module tests, demo script). Its own test
files are data for these tests, so pytest must not collect them directly.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

collect_ignore = ["fixture_project"]

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
FIXTURE = HERE / "fixture_project"


@pytest.fixture
def project(tmp_path):
    """A fresh copy of the fixture project; returns its root."""
    root = tmp_path / "proj"
    shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns("__pycache__", ".tito", "student"))
    return root


@pytest.fixture
def tito(project):
    """Run ``python -m tito ARGS`` inside the fixture project."""

    def run(*args, cwd=None, timeout=300):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return subprocess.run([sys.executable, "-m", "tito", *args], cwd=cwd or project, env=env,
                              capture_output=True, text=True, timeout=timeout)

    return run
