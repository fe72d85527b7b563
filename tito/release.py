"""``tito release``: make the student version of a module notebook.

Every region from a ``### BEGIN SOLUTION`` line to its ``### END SOLUTION`` line (both
included) becomes, at the indentation of the BEGIN line::

    # YOUR CODE HERE
    raise NotImplementedError()

(in markdown cells: ``YOUR ANSWER HERE``). Unbalanced or nested markers are an error that
names the line of the ``.py`` file. The result is written as ``.py`` (jupytext percent)
and ``.ipynb`` to ``student/NN_name/`` (or ``--out``); existing files are only
replaced with ``--force``.

nbgrader metadata (schema 3) is added without depending on nbgrader:

* cells that contained a solution region: ``solution: true, grade: false, locked: false``;
* test cells (code cells without a solution that have an ``assert`` statement, or that
  already carry ``nbgrader.grade: true``): ``grade: true, solution: false, locked: true,
  points: <existing or 1>``;
* other cells are left without nbgrader metadata.

``grade_id`` is kept if the cell already has one; otherwise it is the first function or
class the cell defines, else ``cell-<content id>``; made unique with ``-2``, ``-3``...
"""
from __future__ import annotations

import ast
import copy
import re
from pathlib import Path

from tito.errors import TitoError

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
_ASSERT = re.compile(r"^\s*assert\b", re.M)


def check_markers(lines: list[str], where) -> None:
    """Raise if BEGIN/END markers in ``lines`` are unbalanced or nested.

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


def _first_def(source: str) -> str | None:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            return node.name
    return None


def student_notebook(module):
    """The student version of ``module``'s notebook (nbformat node)."""
    from tito.notebook import cell_start_lines, read_py

    src = module.require_notebook()
    rel = module.project.rel(src)
    text_lines = src.read_text(encoding="utf-8").splitlines()
    check_markers(text_lines, lambda i: f"{rel}:{i + 1}")

    nb = copy.deepcopy(read_py(src))
    starts = cell_start_lines(src, len(nb.cells))
    used: set[str] = set()

    def unique(gid: str) -> str:
        base, k = gid, 2
        while gid in used:
            gid, k = f"{base}-{k}", k + 1
        used.add(gid)
        return gid

    for idx, cell in enumerate(nb.cells):
        def where(i, idx=idx):
            if starts is not None:
                return f"{rel}:{starts[idx] + i}"
            return f"{rel} cell {idx} line {i + 1}"

        check_markers(cell.source.split("\n"), where)
        original = cell.source
        new_source, n = strip_solutions(original, markdown=cell.cell_type == "markdown")
        meta = dict(cell.metadata.get("nbgrader") or {})
        is_test = cell.cell_type == "code" and (bool(meta.get("grade")) or bool(_ASSERT.search(original)))
        if n:
            cell.source = new_source
            meta.update(solution=True, grade=False, locked=False)
            meta.pop("points", None)
        elif is_test:
            meta.update(grade=True, solution=False, locked=True, points=meta.get("points", 1))
        elif not meta:
            continue
        gid = meta.get("grade_id") or _first_def(original) or f"cell-{cell['id']}"
        meta["grade_id"] = unique(str(gid))
        meta["schema_version"] = 3
        order = ["solution", "grade", "locked", "points", "grade_id", "schema_version"]
        cell.metadata["nbgrader"] = {k: meta[k] for k in sorted(meta, key=lambda k: (
            order.index(k) if k in order else len(order), k))}
    return nb


def release_command(module, out: str | None = None, force: bool = False) -> int:
    from tito.notebook import stable_ids, write_ipynb, write_py

    project = module.project
    out_dir = Path(out) if out else project.root / "student" / module.dirname
    nb = student_notebook(module)
    stable_ids(nb)
    py_dest = out_dir / module.notebook.name
    ipynb_dest = py_dest.with_suffix(".ipynb")
    existing = [p for p in (py_dest, ipynb_dest) if p.exists()]
    if existing and not force:
        raise TitoError("refusing to overwrite " + ", ".join(project.rel(p) for p in existing)
                        + " (use --force)")
    write_py(nb, py_dest)
    write_ipynb(nb, ipynb_dest)
    sols = sum(1 for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution"))
    tests = sum(1 for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade"))
    print(f"released {module.dirname}: {sols} solution cell(s), {tests} graded test cell(s)")
    print(f"wrote {project.rel(py_dest)}")
    print(f"wrote {project.rel(ipynb_dest)}")
    return 0
