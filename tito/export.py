"""``tito export``: notebook ``.py`` -> package module, via nbdev 3 working in memory.

Steps: jupytext reads the ``.py`` (cells get content-derived ids, see ``tito.notebook``);
nbdev's ``NBProcessor`` + ``ExportModuleProc`` pick the ``#| export`` cells; nbdev's
``ModuleMaker`` writes the module into a scratch directory that mirrors the package
layout (so nbdev's relative-import rewriting is right), with the "File to edit" header
pointing at the real ``.py`` relative to the target module. The text is compiled; only
if that succeeds is it moved into place with ``os.replace``. nbdev is never asked to
touch ``pyproject.toml`` or ``__init__.py`` files.
"""
from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tito.errors import TitoError

_HDR = re.compile(r"^# %% .* #(?P<id>[A-Za-z0-9_-]+)$")


@dataclass
class Rendered:
    target: Path          # package file the notebook exports to
    text: str             # generated module source
    names: list[str]      # its __all__


def _syntax_error(project, src_nb, ncells: int, cell_index: int, err: SyntaxError, line_in_cell: int) -> TitoError:
    from tito.notebook import cell_start_lines

    starts = cell_start_lines(src_nb, ncells)
    where = f"cell {cell_index}, line {line_in_cell}"
    if starts is not None:
        where += f" ({project.rel(src_nb)}:{starts[cell_index] + line_in_cell - 1})"
    code_line = (err.text or "").rstrip("\n")
    msg = f"syntax error in exported {where}: {err.msg}"
    if code_line:
        msg += f"\n    {code_line}"
    return TitoError(msg + "\npackage file left unchanged")


def render(module) -> Rendered:
    """Export ``module``'s notebook to text without touching the package."""
    from fastcore.nbio import dict2nb
    from nbdev.export import ExportModuleProc
    from nbdev.maker import ModuleMaker
    from nbdev.process import NBProcessor

    from tito.notebook import read_py

    project = module.project
    src = module.require_notebook()
    nb = read_py(src)
    index_of = {c["id"]: i for i, c in enumerate(nb.cells)}

    # nbdev reads its config (for the docs URL) from the cwd: run inside the project.
    with contextlib.chdir(project.root):
        proc_nb = dict2nb(json.loads(json.dumps(nb)))
        exp = ExportModuleProc()
        NBProcessor(nb=proc_nb, procs=[exp]).process()

        default_exp = getattr(exp, "default_exp", None)
        if not default_exp:
            raise TitoError(f"{project.rel(src)} has no '#| default_exp' cell")
        others = sorted(k for k in exp.modules if k != "#")
        if others:
            raise TitoError(f"{project.rel(src)}: '#| export <module>' to other modules "
                            f"({', '.join(others)}) is not supported; export to the default_exp only")
        cells = [c for c in exp.modules.get("#", []) if c.cell_type == "code" and c.source.strip()]
        if not cells:
            raise TitoError(f"{project.rel(src)} has no '#| export' code cells")

        # Check each exported cell on its own first: gives the notebook cell and line.
        for c in cells:
            i = index_of[c.id]
            try:
                compile(nb.cells[i].source, f"<cell {i}>", "exec")
            except SyntaxError as e:
                raise _syntax_error(project, src, len(nb.cells), i, e, e.lineno or 1) from None

        target = project.lib_path / (default_exp.replace(".", "/") + ".py")
        with tempfile.TemporaryDirectory(prefix="tito-export-") as tmp:
            scratch_lib = Path(tmp) / project.lib_path.name
            mm = ModuleMaker(dest=scratch_lib, name=default_exp, nb_path=src, is_new=True)
            mm.dest2nb = Path(os.path.relpath(src, target.parent)).as_posix()
            mm.hdr = f"# %% {mm.dest2nb}"
            mm.make(exp.modules["#"], exp.in_all.get("#", []), lib_path=scratch_lib)
            text = mm.fname.read_text(encoding="utf-8")

    try:
        tree = ast.parse(compile(text, str(target), "exec", ast.PyCF_ONLY_AST))
    except SyntaxError as e:
        raise _whole_file_error(project, src, len(nb.cells), text, e, index_of) from None
    return Rendered(target, text, _all_names(tree))


def _whole_file_error(project, src, ncells: int, text: str, err: SyntaxError, index_of) -> TitoError:
    lines = text.splitlines()
    lineno = err.lineno or 1
    for k in range(min(lineno, len(lines)) - 1, -1, -1):
        m = _HDR.match(lines[k])
        if m and m.group("id") in index_of:
            return _syntax_error(project, src, ncells, index_of[m.group("id")], err, lineno - k - 1)
    return TitoError(f"generated module does not compile (line {lineno}): {err.msg}\n"
                     "package file left unchanged")


def _all_names(tree: ast.Module) -> list[str]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            try:
                return list(ast.literal_eval(node.value))
            except ValueError:
                return []
    return []


def _ensure_packages(project, target: Path) -> list[Path]:
    """Create missing ``__init__.py`` files between the lib dir and ``target``."""
    made = []
    d = target.parent
    lib = project.lib_path.resolve()
    while True:
        init = d / "__init__.py"
        if not init.exists():
            d.mkdir(parents=True, exist_ok=True)
            init.write_text("", encoding="utf-8")
            made.append(init)
        if d.resolve() == lib or lib not in d.resolve().parents:
            break
        d = d.parent
    return made


def write_atomically(target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def drift(module) -> tuple[bool, Rendered]:
    """(True if the committed package file differs from a fresh export, the export)."""
    r = render(module)
    current = r.target.read_bytes() if r.target.is_file() else None
    return current != r.text.encode("utf-8"), r


def export_command(module) -> int:
    project = module.project
    r = render(module)
    rel_target = project.rel(r.target)
    if r.target.is_file() and r.target.read_bytes() == r.text.encode("utf-8"):
        status = "unchanged"
    else:
        for init in _ensure_packages(project, r.target):
            print(f"created {project.rel(init)}")
        write_atomically(r.target, r.text)
        status = "written"
    print(f"exported {project.rel(module.notebook)} -> {rel_target} ({status})")
    print(f"__all__ = {r.names}")
    return 0
