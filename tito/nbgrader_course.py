"""``tito nbgrader generate``: an nbgrader course directory for a module.

Writes, under ``--out`` (default ``nbgrader/``)::

    nbgrader_config.py                       course settings (cell timeout for autograde)
    source/NN_name/<name>.ipynb              the instructor's notebook, solutions kept

The notebook carries nbgrader metadata (schema 3) stamped by
``tito.release.stamp_nbgrader``, the same function that makes ``tito release`` and the
student workspace: solution cells, grade cells (the notebook's test cells, worth the
POINTS of the checkpoint capabilities they check, from module.yaml ``notebook_tests``),
locked cells (every other code cell: given code, setup, analyses are never graded) and
``schema_version``. A line that mentions a solution marker outside a region is an error
(nbgrader would take it for a marker). nbgrader itself is not needed to generate; the
instructor then runs, inside the directory::

    nbgrader generate_assignment NN_name     # release/NN_name/<name>.ipynb for students
    nbgrader autograde NN_name               # after collecting submitted/<student>/NN_name/

Existing files are only replaced with ``--force``.
"""
from __future__ import annotations

from pathlib import Path

from tito.errors import TitoError

CELL_TIMEOUT = 600  # seconds per cell when nbgrader executes a submission

CONFIG = '''"""nbgrader configuration for the TinyTorch course (written by `tito nbgrader generate`)."""
c = get_config()  # noqa: F821 (provided by nbgrader when it loads this file)

c.CourseDirectory.course_id = "tinytorch"
# Some cells train small models: nbgrader's default of 30 s per cell is too short.
c.Execute.timeout = {timeout}
'''


def source_notebook(module):
    """The instructor's notebook with nbgrader metadata stamped (solutions kept)."""
    import copy

    from tito.notebook import read_py
    from tito.release import stamp_nbgrader

    src = module.require_notebook()
    nb = copy.deepcopy(read_py(src))
    stamp_nbgrader(module, nb, src)
    nb.metadata.pop("jupytext", None)  # a plain notebook for nbgrader, not a jupytext pair
    return nb


def generate_command(module, out: str | None = None, force: bool = False) -> int:
    from tito.export import write_atomically
    from tito.notebook import write_ipynb
    from tito.release import count_cells

    project = module.project
    root = Path(out).resolve() if out else project.root / "nbgrader"
    dest = root / "source" / module.dirname / f"{module.name}.ipynb"
    config = root / "nbgrader_config.py"
    nb = source_notebook(module)
    existing = [p for p in (dest, config) if p.exists()]
    if existing and not force:
        raise TitoError("refusing to overwrite " + ", ".join(project.rel(p) for p in existing)
                        + " (use --force)")
    write_ipynb(nb, dest)
    write_atomically(config, CONFIG.format(timeout=CELL_TIMEOUT))
    sols, tests = count_cells(nb)
    points = sum(c.metadata["nbgrader"].get("points", 0) for c in nb.cells if "nbgrader" in c.metadata)
    locked = sum(1 for c in nb.cells if c.metadata.get("nbgrader", {}).get("locked"))
    print(f"nbgrader course for {module.dirname}: {sols} solution cells, {tests} grade cells "
          f"({points:g} points), {locked} locked cells")
    print(f"wrote {project.rel(dest)}")
    print(f"wrote {project.rel(config)}")
    print(f"next: cd {project.rel(root)} && nbgrader generate_assignment {module.dirname}")
    return 0
