"""``tito demo``: run the script named by the ``demo:`` key of a module's module.yaml.

The path is taken relative to the project root (``demo: scripts/demo_compression.py``),
or else to the module directory. It runs with the current Python, from the project root,
with the root first on ``PYTHONPATH``; its output streams straight to the terminal and
its exit status becomes tito's (0, or 1 for any failure).
"""
from __future__ import annotations

import subprocess
import sys

from tito.errors import TitoError


def demo_command(module, args: list[str]) -> int:
    from tito.pytest_run import project_env

    project = module.project
    script = module.meta.get("demo")
    if not script:
        raise TitoError(f"{module.dirname} has no demo: add 'demo: <path/to/script.py>' to "
                        f"{project.rel(module.path / 'module.yaml')}")
    candidates = [project.root / script, module.path / script]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise TitoError(f"demo script '{script}' not found (looked for "
                        + " and ".join(project.rel(p) for p in candidates) + ")")
    print(f"running {project.rel(path)}", flush=True)
    proc = subprocess.run([sys.executable, str(path), *args], cwd=project.root, env=project_env(project))
    if proc.returncode != 0:
        raise TitoError(f"demo exited with status {proc.returncode}")
    return 0
