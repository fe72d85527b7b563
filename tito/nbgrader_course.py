"""``tito nbgrader generate``: an nbgrader course directory for a module.

Writes, under ``--out`` (default ``nbgrader/``)::

    nbgrader_config.py                       course settings (cell timeout for autograde)
    source/NN_name/<stem>.ipynb              each notebook of the module, solutions kept
                                             (<stem>: its file name without ``_dev.py``)

One assignment per module, one nbgrader notebook per module notebook. Each carries nbgrader
metadata (schema 3) stamped by ``tito.release.stamped_notebooks``, the same function that
makes ``tito release`` and the student workspace: solution cells, grade cells (the test cells, worth the
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


def nbgrader_name(notebook: Path) -> str:
    """``compression_dev.py`` -> ``compression.ipynb``: the name students see in nbgrader."""
    stem = Path(notebook).stem
    return (stem[: -len("_dev")] if stem.endswith("_dev") else stem) + ".ipynb"


def generate_command(module, out: str | None = None, force: bool = False) -> int:
    """Write the course directory for ``module`` under ``out`` (see the module docstring)."""
    from tito.export import write_atomically
    from tito.notebook import write_ipynb
    from tito.release import count_cells, stamped_notebooks

    project = module.project
    root = Path(out).resolve() if out else project.root / "nbgrader"
    config = root / "nbgrader_config.py"
    pairs = [(root / "source" / module.dirname / nbgrader_name(src), nb) for src, nb in stamped_notebooks(module)]
    existing = [p for p in [config, *(dest for dest, _ in pairs)] if p.exists()]
    if existing and not force:
        raise TitoError("refusing to overwrite " + ", ".join(project.rel(p) for p in existing)
                        + " (use --force)")
    sols = tests = locked = 0
    points = 0.0
    for dest, nb in pairs:
        nb.metadata.pop("jupytext", None)  # a plain notebook for nbgrader, not a jupytext pair
        write_ipynb(nb, dest)
        s_, t_ = count_cells(nb)
        metas = [c.metadata.get("nbgrader", {}) for c in nb.cells]
        sols, tests = sols + s_, tests + t_
        locked += sum(bool(m.get("locked")) for m in metas)
        points += sum(m.get("points", 0) for m in metas)
    write_atomically(config, CONFIG.format(timeout=CELL_TIMEOUT))
    print(f"nbgrader course for {module.dirname}: {len(pairs)} notebook(s), {sols} solution cells, "
          f"{tests} grade cells ({points:g} points), {locked} locked cells")
    for dest, _ in pairs:
        print(f"wrote {project.rel(dest)}")
    print(f"wrote {project.rel(config)}")
    print(f"next: cd {project.rel(root)} && nbgrader generate_assignment {module.dirname}")
    return 0
