"""``tito test``: run a module notebook headlessly, then its pytest suite.

The notebook is read from the ``.py`` with jupytext and executed cell by cell with
nbclient in a real ipykernel ``python3`` kernel, working directory = the module dir and
the project root first on ``PYTHONPATH``. The first failing cell stops the run and is
reported with its index, first source lines and the end of its traceback.
``--check-export`` instead compares every exported package file with a fresh export.
"""
from __future__ import annotations

import os
import re
import time

from tito.errors import TitoError

CELL_TIMEOUT = 600  # seconds per cell
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def run_notebook(module) -> bool:
    import nbformat  # noqa: F401  (installed with jupytext)
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    from tito.notebook import read_py
    from tito.pytest_run import project_env

    project = module.project
    src = module.require_notebook()
    nb = read_py(src)
    # The kernel inherits our environment: make the project's package importable first.
    os.environ.update({"PYTHONPATH": project_env(project)["PYTHONPATH"]})
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(module.path)}})
    code_cells = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    print(f"executing {project.rel(src)} ({len(code_cells)} code cells) ...", flush=True)
    start = time.perf_counter()
    with client.setup_kernel():
        for i, cell in code_cells:
            try:
                client.execute_cell(cell, i)
            except (CellExecutionError, CellTimeoutError, DeadKernelError) as e:
                _report_cell_failure(i, cell, e)
                return False
    print(f"notebook OK: {len(code_cells)} code cells ran without error in {time.perf_counter() - start:.0f} s")
    return True


def _report_cell_failure(index: int, cell, err: Exception) -> None:
    print(f"notebook FAILED in cell {index}:")
    src_lines = cell.source.splitlines()
    for line in src_lines[:5]:
        print(f"    {line}")
    if len(src_lines) > 5:
        print("    ...")
    tb = None
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            tb = "\n".join(out.get("traceback", [])) or f"{out.get('ename')}: {out.get('evalue')}"
    if tb is None:
        tb = str(err)
    tb_lines = _ANSI.sub("", tb).rstrip().splitlines()
    print("traceback (last lines):")
    for line in tb_lines[-12:]:
        print(f"  {line}")


def run_module_tests(module, required: bool) -> bool:
    from tito.pytest_run import run_pytest

    d = module.tests_dir
    rel = module.project.rel(d)
    if not d.is_dir():
        print(f"no module tests: {rel} does not exist" + (" (required by --pytest-only)" if required else ""))
        return not required
    print(f"running pytest on {rel} ...", flush=True)
    code, cases = run_pytest(module.project, [d])
    if code == 5:  # no tests collected
        print(f"no tests collected in {rel}")
        return not required
    return code == 0


def check_export(module) -> bool:
    """True if every exported file equals a fresh export; prints one FAIL line per file that does not."""
    from tito.export import drift

    project = module.project
    drifted, r = drift(module)
    for d in drifted:
        print(f"FAIL: {project.rel(d.path)} {d.why}: package drifted from notebook; "
              f"run tito export {module.dirname}")
    if drifted:
        return False
    n = len(r.files)
    print(f"OK: {r.describe(project)} ({n} file{'s' * (n != 1)}) matches a fresh export of "
          f"{project.rel(r.notebook)}")
    return True


def test_command(module, notebook_only=False, pytest_only=False, check_export_only=False) -> int:
    if check_export_only:
        return 0 if check_export(module) else 1
    ok = True
    if not pytest_only:
        ok = run_notebook(module) and ok
    if not notebook_only:
        ok = run_module_tests(module, required=pytest_only) and ok
    if not ok:
        raise TitoError(f"tests failed for {module.dirname}")
    print(f"all tests passed for {module.dirname}")
    return 0
