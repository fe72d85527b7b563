"""``tito test``: run a module notebook headlessly, then its pytest suite.

The notebook (the student's workspace notebook if there is one, see ``tito.workspace``)
is executed cell by cell in a real ipykernel ``python3`` kernel (``tito.kernel``); the
first failing cell stops the run and is reported as the line of the ``.py`` that failed
(file:line and the code), with the lines that called it. The pytest part imports the
package, so it is refused unless the package is a fresh export of that notebook.
``--check-export`` instead compares every exported package file with a fresh export.
"""
from __future__ import annotations

from pathlib import Path

from tito.errors import TitoError


def run_notebook(module, notebook: Path | None = None) -> bool:
    """Run ``notebook`` (default: the module's) headless; print where it failed. True if it ran."""
    from tito.kernel import print_run
    from tito.kernel import run_notebook as run

    result = run(module.project, Path(notebook) if notebook else module.require_notebook())
    print_run(result)
    return result.ok


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


def check_export(module, notebook: Path | None = None) -> bool:
    """True if every exported file equals a fresh export; prints one FAIL line per file that does not."""
    from tito.export import drift

    project = module.project
    drifted, r = drift(module, notebook)
    for d in drifted:
        print(f"FAIL: {project.rel(d.path)} {d.why}: package drifted from notebook; "
              f"run tito export {module.dirname}")
    if drifted:
        return False
    n = len(r.files)
    print(f"OK: {r.describe(project)} ({n} file{'s' * (n != 1)}) matches a fresh export of "
          f"{project.rel(r.notebook)}")
    return True


def test_command(module, notebook_only=False, pytest_only=False, check_export_only=False,
                 notebook: Path | None = None) -> int:
    """``tito test``: the notebook in a kernel, then pytest on tests/NN_name (fresh export required)."""
    if check_export_only:
        return 0 if check_export(module, notebook) else 1
    if not notebook_only and module.tests_dir.is_dir():
        from tito.workspace import require_fresh_export
        require_fresh_export(module, notebook or module.require_notebook())
    ok = True
    if not pytest_only:
        ok = run_notebook(module, notebook) and ok
    if not notebook_only:
        ok = run_module_tests(module, required=pytest_only) and ok
    if not ok:
        raise TitoError(f"tests failed for {module.dirname}")
    print(f"all tests passed for {module.dirname}")
    return 0
