"""Feedback that points at the student's ``.py``: locations, message trimming, tables.

A failure is reported as ``path:line in function`` plus the code on that line, where the
path is the jupytext notebook the student edits, whether the failure happened in a
notebook cell run by the kernel (``from_kernel_frames``) or in the exported package run
by pytest (``from_pytest_output``). A package line is mapped back through the nbdev
header above it, ``# %% <notebook, relative to the file> #<cell id>``, to the notebook
it was exported from (``PackageLines``), so a module with several notebooks, or one
exported from the student's workspace, needs no further bookkeeping. Frames in
site-packages and in the kernel's own machinery are left out.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

_HEADER = re.compile(r"^# %% (?P<notebook>\S+) #(?P<id>[A-Za-z0-9_-]+)\s*$")
_DIRECTIVE = re.compile(r"^\s*#\|")
# pytest's long traceback: one "path:line: ..." line closes every entry
_PYTEST_LOC = re.compile(r"^(?P<path>[^\s:][^:\n]*\.py):(?P<line>\d+):(?: in (?P<func>\S+)|.*)$", re.M)


@dataclass
class Where:
    """A line of code: ``path`` as shown (project-relative when possible), 1-based ``line``."""

    path: str
    line: int
    code: str
    func: str | None = None

    @property
    def short(self) -> str:
        """``name.py:12`` (for one-line messages)."""
        return f"{Path(self.path).name}:{self.line}"

    def lines(self, indent: str = "  ") -> list[str]:
        """``path:line in func`` and the code under it, for printing."""
        head = f"{indent}{self.path}:{self.line}" + (f" in {self.func}" if self.func else "")
        return [head, f"{indent}    {self.line} | {self.code.strip()}"]


def _enclosing_def(source: str, lineno: int) -> str | None:
    """Qualified name (``Class.method``) of the innermost function or class in ``source``
    whose body holds line ``lineno`` (1-based); None at the top level."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    defs = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    names, body = [], tree.body
    while True:
        inner = next((n for n in body if isinstance(n, defs)
                      and n.lineno <= lineno <= (getattr(n, "end_lineno", None) or n.lineno)), None)
        if inner is None:
            return ".".join(names) or None
        names.append(inner.name)
        body = inner.body


class NotebookLines:
    """Where each cell of a jupytext ``.py`` notebook sits in that file.

    ``path`` is the notebook; cells are read with tito's stable ids, so the ids in an
    export's ``# %%`` headers find their cell as long as the export is fresh.
    """

    def __init__(self, project, path: Path):
        from tito.notebook import cell_start_lines, read_py

        self.project = project
        self.path = Path(path)
        self.rel = project.rel(self.path)
        self.nb = read_py(self.path)
        self.starts = cell_start_lines(self.path, len(self.nb.cells))
        self._by_id = {c["id"]: i for i, c in enumerate(self.nb.cells)}

    def at(self, index: int, line_in_cell: int) -> Where | None:
        """The ``.py`` line of line ``line_in_cell`` (1-based) of cell ``index``."""
        if self.starts is None or not 0 <= index < len(self.nb.cells):
            return None
        src = self.nb.cells[index].source
        lines = src.split("\n")
        if not 1 <= line_in_cell <= len(lines):
            return None
        return Where(self.rel, self.starts[index] + line_in_cell - 1, lines[line_in_cell - 1],
                     _enclosing_def(src, line_in_cell))

    def cell_of_source(self, text: str) -> int | None:
        """Index of the code cell whose source is ``text`` (trailing whitespace ignored)."""
        want = text.rstrip()
        for i, cell in enumerate(self.nb.cells):
            if cell.cell_type == "code" and cell.source.rstrip() == want:
                return i
        return None

    def cell_line(self, cell_id: str, offset: int) -> Where | None:
        """Line ``offset`` (0-based) of the exported text of the cell with id ``cell_id``.

        nbdev writes a cell without its leading ``#|`` directive lines.
        """
        index = self._by_id.get(cell_id)
        if index is None:
            return None
        cell_lines = self.nb.cells[index].source.split("\n")
        skip = 0
        while skip < len(cell_lines) and _DIRECTIVE.match(cell_lines[skip]):
            skip += 1
        return self.at(index, skip + offset + 1)


class PackageLines:
    """Maps lines of exported package files back to the notebooks they were exported from."""

    def __init__(self, project):
        self.project = project
        self._notebooks: dict[Path, NotebookLines | None] = {}

    def notebook(self, path: Path) -> NotebookLines | None:
        """The (cached) ``NotebookLines`` of ``path``; None if it cannot be read."""
        from tito.errors import TitoError

        path = Path(path).resolve()
        if path not in self._notebooks:
            try:
                self._notebooks[path] = NotebookLines(self.project, path) if path.is_file() else None
            except TitoError:
                self._notebooks[path] = None
        return self._notebooks[path]

    def locate(self, file: Path, line: int) -> Where | None:
        """The notebook line that line ``line`` (1-based) of the package file ``file`` came
        from; None outside exported cells, or when the notebook changed since the export."""
        try:
            text = Path(file).read_text(encoding="utf-8").split("\n")
        except OSError:
            return None
        if not 1 <= line <= len(text):
            return None
        for k in range(line - 1, -1, -1):
            m = _HEADER.match(text[k])
            if m:
                nbl = self.notebook(Path(file).parent / m.group("notebook"))
                return nbl.cell_line(m.group("id"), line - 1 - k - 1) if nbl else None
        return None


def _is_external(path: str) -> bool:
    return "site-packages" in path or "dist-packages" in path


def from_kernel_frames(frames: list, nbl: NotebookLines, package: PackageLines | None = None) -> list[Where]:
    """Frames reported by the kernel running ``nbl``'s notebook (``[file, line, function,
    cell source or None]``), outermost first, as notebook or project locations; frames
    outside the project are dropped."""
    package = package or PackageLines(nbl.project)
    out = []
    root = nbl.project.root.resolve()
    for file, line, func, source in frames:
        if source is not None:
            index = nbl.cell_of_source(source)
            where = nbl.at(index, line) if index is not None else None
            if where is not None:
                out.append(where)
            continue
        path = Path(file)
        if _is_external(file) or not path.is_file():
            continue
        resolved = path.resolve()
        if root not in resolved.parents:
            continue
        out.append(package.locate(resolved, line) or _file_line(nbl.project, resolved, line, func))
    return out


def _file_line(project, path: Path, line: int, func: str | None = None) -> Where:
    try:
        code = path.read_text(encoding="utf-8").split("\n")[line - 1]
    except (OSError, IndexError):
        code = ""
    return Where(project.rel(path), line, code, func)


def from_pytest_output(output: str, project, package: PackageLines | None = None) -> Where | None:
    """The innermost frame of a pytest long traceback that lies in the package, mapped to
    the notebook it was exported from (else the package line itself); None if there is none."""
    package = package or PackageLines(project)
    lib = project.lib_path.resolve()
    for m in reversed(list(_PYTEST_LOC.finditer(output or ""))):
        path = (project.root / m.group("path")).resolve()
        if lib not in path.parents or not path.is_file():
            continue
        line = int(m.group("line"))
        return package.locate(path, line) or _file_line(project, path, line, m.group("func"))
    return None


def shorten(text: str, width: int) -> str:
    """The first line of ``text``, cut at a word boundary to at most ``width`` characters
    (an ellipsis marks a cut; a single word longer than ``width`` is kept whole)."""
    first = next((ln.strip() for ln in (text or "").splitlines() if ln.strip()), "")
    if len(first) <= width:
        return first
    cut = first[: width - 1]
    cut = cut[: cut.rindex(" ")] if " " in cut else first.split(" ", 1)[0]
    if cut == first:  # one word: nothing to leave out
        return first
    return (cut.rstrip(" ,;:") or cut) + "…"
