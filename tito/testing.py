"""``tito test``: run a module notebook headlessly, then its pytest suite.

Each notebook of the module (the student's workspace notebooks if there are some, see
``tito.workspace``) is executed cell by cell in its own ipykernel ``python3`` kernel
(``tito.kernel``); the first failing cell stops that notebook's run and is reported as
the line of the ``.py`` that failed (file:line and the code), with the lines that called
it. The pytest part imports the package, so it is refused unless the package is a fresh
export of those notebooks.
``--check-export`` instead compares every exported package file with a fresh export.
"""
from __future__ import annotations

from pathlib import Path

from tito.errors import TitoError


def run_notebooks(project, notebooks: list[Path]) -> bool:
    """Run each notebook headless in its own kernel; print where one failed. True if all ran."""
    from tito.kernel import print_run, run_notebook

    ok = True
    for path in notebooks:
        result = run_notebook(project, Path(path))
        print_run(result)
        ok = ok and result.ok
    return ok


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
          f"{r.sources(project)}")
    return True


def test_command(source, notebook_only=False, pytest_only=False, check_export_only=False) -> int:
    """``tito test``: ``source``'s notebooks in a kernel, then pytest on tests/NN_name (which
    needs a fresh export). ``source`` is a ``tito.workspace.Source``."""
    module = source.module
    if check_export_only:
        return 0 if check_export(module, source.notebook) else 1
    if not notebook_only and module.tests_dir.is_dir():
        from tito.workspace import require_fresh_export
        require_fresh_export(source)
    ok = True
    if not pytest_only:
        ok = run_notebooks(module.project, source.notebooks) and ok
    if not notebook_only:
        ok = run_module_tests(module, required=pytest_only) and ok
    if not ok:
        raise TitoError(f"tests failed for {module.dirname}")
    print(f"all tests passed for {module.dirname}")
    return 0
