"""``tito release``: make the student version of a module notebook.

Every region from a ``### BEGIN SOLUTION`` line to its ``### END SOLUTION`` line (both
included), in every notebook of the module (``notebooks:`` in module.yaml), becomes, at the
indentation of the BEGIN line::

    # YOUR CODE HERE
    raise NotImplementedError()

(in markdown cells: ``YOUR ANSWER HERE``), exactly as nbgrader's ``ClearSolutions`` does.
Unbalanced or nested markers are an error that names the line of the ``.py`` file, and so
is any other line that mentions ``BEGIN SOLUTION`` / ``END SOLUTION``: nbgrader matches
those words anywhere in a line, prose included. Each notebook is written as ``.py``
(jupytext percent) and ``.ipynb`` to ``student/NN_name/`` (or ``--out``); existing files
are only replaced with ``--force``.

nbgrader metadata (schema 3) is computed from the cells themselves by ``stamp_nbgrader``,
the one place that decides it (``tito module start`` and ``tito nbgrader generate`` use it
too); metadata already in the notebook only contributes its ``grade_id``:

* solution cells (a solution region inside): ``solution: true, locked: false``; a markdown
  solution cell is also ``grade: true`` with 0 points (nbgrader grades written answers by hand);
* test cells (code defining a top-level ``test_*`` function, not exported): locked and
  ``grade: true`` with ``points`` = the POINTS of the checkpoint capabilities they check
  (``tito.grading.notebook_test_points``, over the tests of all the module's notebooks,
  whose names must differ), or locked and ungraded when worth 0;
* every other code cell (given code, setup, analyses): ``locked: true``, never graded;
* markdown cells without a region: no nbgrader metadata.

``grade_id`` is kept if the cell already has one; otherwise it is the first function or
class the cell defines, else ``cell-<content id>``; made unique with ``-2``, ``-3``...
Keys are written in sorted order, the order nbformat (and so JupyterLab + jupytext) writes
them, so saving the notebook from JupyterLab leaves the cell headers as they are.
"""
from __future__ import annotations

import ast
import copy
import re
from pathlib import Path

from tito.errors import TitoError

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
# What nbgrader's ClearSolutions looks for, anywhere in a line.
NBGRADER_WORDS = ("BEGIN SOLUTION", "END SOLUTION")
SCHEMA_VERSION = 3
_EXPORT = re.compile(r"^\s*#\|\s*export[is]?\b", re.M)


def check_markers(lines: list[str], where) -> None:
    """Raise if BEGIN/END markers in ``lines`` are unbalanced or nested, or if a line that
    is not a marker mentions one (nbgrader would take it for a marker).

    ``where(i)`` turns a 0-based index into a location for messages.
    """
    open_at = None
    for i, line in enumerate(lines):
        s = line.strip()
        if s.startswith(BEGIN):
            if open_at is not None:
                raise TitoError(f"{where(i)}: nested '{BEGIN}' (the one at {where(open_at)} is not closed)")
            open_at = i
        elif s.startswith(END):
            if open_at is None:
                raise TitoError(f"{where(i)}: '{END}' without a matching '{BEGIN}'")
            open_at = None
        elif any(w in line for w in NBGRADER_WORDS):
            raise TitoError(f"{where(i)}: this line mentions a solution marker but is not one; "
                            f"nbgrader would take it for one: reword it\n    {s}")
    if open_at is not None:
        raise TitoError(f"{where(open_at)}: '{BEGIN}' is never closed by '{END}'")


def strip_solutions(source: str, markdown: bool = False) -> tuple[str, int]:
    """``source`` with solution regions replaced; returns (new source, regions replaced)."""
    out, n, inside = [], 0, False
    for line in source.split("\n"):
        s = line.strip()
        if s.startswith(BEGIN):
            indent = line[: len(line) - len(line.lstrip())]
            if markdown:
                out.append(f"{indent}YOUR ANSWER HERE")
            else:
                out += [f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError()"]
            inside, n = True, n + 1
        elif s.startswith(END):
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(out), n


def _top_level_defs(source: str) -> list[str]:
    """Names of the functions and classes defined at the top level of ``source``."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [node.name for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]


def has_solution(cell) -> bool:
    """True if ``cell`` holds a ``### BEGIN SOLUTION`` line."""
    return any(line.strip().startswith(BEGIN) for line in cell.source.split("\n"))


def is_exported(cell) -> bool:
    """True for a code cell with an ``#| export`` / ``exporti`` / ``exports`` directive."""
    return cell.cell_type == "code" and bool(_EXPORT.search(cell.source))


def cell_tests(cell) -> list[str]:
    """The ``test_*`` functions a notebook test cell defines ([] if it is not a test cell).

    A test cell is a code cell, without solution region and not exported, that defines
    a top-level function whose name starts with ``test_``. A cell that merely contains
    ``assert`` (setup helpers, analyses) is not one.
    """
    if cell.cell_type != "code" or has_solution(cell) or is_exported(cell):
        return []
    return [n for n in _top_level_defs(cell.source) if n.startswith("test_")]


def _locator(module, src: Path, nb):
    """``where(cell_index, line_index)`` -> ``path:line`` of the ``.py`` (or cell/line)."""
    from tito.notebook import cell_start_lines

    rel = module.project.rel(src)
    starts = cell_start_lines(src, len(nb.cells))

    def where(idx: int, i: int) -> str:
        if starts is not None:
            return f"{rel}:{starts[idx] + i}"
        return f"{rel} cell {idx} line {i + 1}"

    return where


def _check_notebook_markers(module, nb, src: Path) -> None:
    """TitoError naming the ``.py`` line of any misplaced solution marker in ``src``."""
    text_lines = src.read_text(encoding="utf-8").splitlines()
    check_markers(text_lines, lambda i: f"{module.project.rel(src)}:{i + 1}")
    where = _locator(module, src, nb)
    for idx, cell in enumerate(nb.cells):
        check_markers(cell.source.split("\n"), lambda i, idx=idx: where(idx, i))


def stamp_nbgrader(nb, points: dict[str, float]) -> None:
    """Set every cell's nbgrader metadata in ``nb`` in place; ``points`` gives each notebook
    test function its points (see the module docstring)."""
    used: set[str] = set()

    def unique(gid: str) -> str:
        base, k = gid, 2
        while gid in used:
            gid, k = f"{base}-{k}", k + 1
        used.add(gid)
        return gid

    for cell in nb.cells:
        old = cell.metadata.pop("nbgrader", None) or {}
        names = cell_tests(cell)
        if has_solution(cell):
            meta = {"solution": True, "locked": False, "grade": cell.cell_type == "markdown"}
            if meta["grade"]:
                meta["points"] = 0
        elif names:
            worth = sum(points[n] for n in names)
            meta = {"solution": False, "locked": True, "grade": worth > 0}
            if worth > 0:
                meta["points"] = worth
        elif cell.cell_type == "code":
            meta = {"solution": False, "locked": True, "grade": False}
        else:
            continue
        defs = _top_level_defs(cell.source) if cell.cell_type == "code" else []
        gid = old.get("grade_id") or (names or defs or [f"cell-{cell['id']}"])[0]
        meta["grade_id"] = unique(str(gid))
        meta["schema_version"] = SCHEMA_VERSION
        cell.metadata["nbgrader"] = dict(sorted(meta.items()))


def stamped_notebooks(module, sources: list[Path] | None = None) -> list[tuple[Path, object]]:
    """``(path, notebook)`` for every notebook of ``module`` (or ``sources``), read and stamped
    with nbgrader metadata, solutions kept. The files are only read.

    Checks the solution markers (TitoError naming the ``.py`` line) and that test function
    names are unique across the notebooks; points come from
    ``tito.grading.notebook_test_points``, which checks module.yaml ``notebook_tests``
    against all the notebooks' tests and the checkpoint.
    """
    from tito.grading import notebook_test_points
    from tito.notebook import read_py

    pairs = []
    for src in sources or module.notebooks:
        if not Path(src).is_file():
            raise TitoError(f"notebook {module.project.rel(src)} not found")
        nb = copy.deepcopy(read_py(src))
        _check_notebook_markers(module, nb, Path(src))
        pairs.append((Path(src), nb))
    seen: dict[str, Path] = {}
    for src, nb in pairs:
        for name in (n for cell in nb.cells for n in cell_tests(cell)):
            if name in seen:
                raise TitoError(f"test function {name} is defined in {module.project.rel(seen[name])} and "
                                f"{module.project.rel(src)}: notebook tests need distinct names")
            seen[name] = src
    points = notebook_test_points(module, list(seen))
    for _, nb in pairs:
        stamp_nbgrader(nb, points)
    return pairs


def student_notebooks(module, sources: list[Path] | None = None) -> list[tuple[Path, object]]:
    """``(path, student notebook)`` for every notebook of ``module``: stamped
    (``stamped_notebooks``), then every solution region replaced by the stub."""
    pairs = stamped_notebooks(module, sources)
    for _, nb in pairs:
        for cell in nb.cells:
            cell.source, _ = strip_solutions(cell.source, markdown=cell.cell_type == "markdown")
    return pairs


def count_cells(nb) -> tuple[int, int]:
    """(solution cells, graded test cells) of a stamped notebook."""
    metas = [c.metadata.get("nbgrader", {}) for c in nb.cells]
    return sum(bool(m.get("solution")) for m in metas), sum(
        bool(m.get("grade")) and not m.get("solution") for m in metas)


def release_command(module, out: str | None = None, force: bool = False) -> int:
    """Write the student version of every notebook of ``module`` (.py + .ipynb) to ``out``."""
    from tito.notebook import stable_ids, write_ipynb, write_py

    project = module.project
    out_dir = Path(out) if out else project.root / "student" / module.dirname
    pairs = student_notebooks(module)
    dests = [(out_dir / src.name, nb) for src, nb in pairs]
    existing = [p for py, _ in dests for p in (py, py.with_suffix(".ipynb")) if p.exists()]
    if existing and not force:
        raise TitoError("refusing to overwrite " + ", ".join(project.rel(p) for p in existing)
                        + " (use --force)")
    sols = tests = 0
    for py, nb in dests:
        stable_ids(nb)
        write_py(nb, py)
        write_ipynb(nb, py.with_suffix(".ipynb"))
        s_, t_ = count_cells(nb)
        sols, tests = sols + s_, tests + t_
    print(f"released {module.dirname}: {sols} solution cell(s), {tests} graded test cell(s)"
          + (f" in {len(dests)} notebooks" if len(dests) > 1 else ""))
    for py, _ in dests:
        print(f"wrote {project.rel(py)} and {py.with_suffix('.ipynb').name}")
    return 0
