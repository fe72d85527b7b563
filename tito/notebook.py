"""Read a jupytext ``.py`` notebook with stable cell ids, and write it as ``.ipynb``.

jupytext gives every cell a random id and nbdev copies ids into the exported module's
``# %%`` headers, so tito replaces them with ids derived from the cell content:
``sha1(cell_type + source)[:8]``, with ``-2``, ``-3``... appended to repeated contents.
An id therefore only changes when its own cell changes, not when cells are inserted.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from tito.errors import TitoError

_CELL_MARKER = re.compile(r"^# %%")


def stable_ids(nb) -> None:
    """Give the cells of ``nb`` deterministic ids (in place)."""
    seen: dict[str, int] = {}
    for cell in nb.cells:
        digest = hashlib.sha1(f"{cell.cell_type}\0{cell.source}".encode("utf-8")).hexdigest()[:8]
        n = seen.get(digest, 0) + 1
        seen[digest] = n
        cell["id"] = digest if n == 1 else f"{digest}-{n}"


def read_py(path: Path):
    """The notebook in ``path`` (jupytext percent format) as an nbformat node."""
    import jupytext

    try:
        nb = jupytext.read(str(path), fmt="py:percent")
    except Exception as e:  # jupytext raises various errors for malformed input
        raise TitoError(f"cannot read {path}: {e}") from None
    stable_ids(nb)
    return nb


def cell_start_lines(path: Path, ncells: int) -> list[int] | None:
    """1-based line number of each cell's first source line in the ``.py`` file.

    Only reliable when every cell starts with a ``# %%`` marker (the usual percent
    layout); returns None otherwise.
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    starts = [i + 2 for i, line in enumerate(lines) if _CELL_MARKER.match(line)]
    return starts if len(starts) == ncells else None


def write_ipynb(nb, dest: Path) -> None:
    import jupytext

    dest.parent.mkdir(parents=True, exist_ok=True)
    jupytext.write(nb, str(dest), fmt="ipynb")


def write_py(nb, dest: Path) -> None:
    import jupytext

    dest.parent.mkdir(parents=True, exist_ok=True)
    jupytext.write(nb, str(dest), fmt="py:percent")


def notebook_command(module) -> int:
    src = module.require_notebook()
    nb = read_py(src)
    dest = module.ipynb
    write_ipynb(nb, dest)
    print(f"wrote {module.project.rel(dest)} ({len(nb.cells)} cells) from {module.project.rel(src)}")
    return 0
