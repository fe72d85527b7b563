"""Run a jupytext notebook headless in a real ipykernel and say where it failed.

The cells run one by one with nbclient in a ``python3`` kernel whose working directory
is the notebook's folder and whose ``PYTHONPATH`` starts with the project root (so it
imports the project's own ``tinytorch``). The first failing cell stops the run. Its
traceback is then read inside the kernel (``sys.last_traceback``) and mapped back to the
lines of the ``.py`` file the student edits (``tito.feedback``), instead of printing the
kernel's cell numbers and temp files. The kernel process's own log (e.g. ipykernel's
"running over TCP without encryption" warning) is kept out of the output and only shown
if the kernel dies.
"""
from __future__ import annotations

import copy
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tito.feedback import NotebookLines, Where, from_kernel_frames

CELL_TIMEOUT = 600  # seconds per cell

# Runs in the kernel after a cell failed: the frames of the last traceback, with the
# source of every cell file (IPython keeps cells in linecache under temp names).
_FRAMES_SNIPPET = r"""
def _tito_frames():
    import json, linecache, os, sys
    frames, tb = [], getattr(sys, "last_traceback", None)
    while tb is not None:
        code = tb.tb_frame.f_code
        frames.append([code.co_filename, tb.tb_lineno, code.co_name])
        tb = tb.tb_next
    err = getattr(sys, "last_value", None)
    if isinstance(err, SyntaxError) and err.filename:
        frames.append([err.filename, err.lineno or 1, "<syntax error>"])
    out = []
    for file, line, name in frames:
        cell = "ipykernel_" in file or file.startswith("<") or not os.path.isfile(file)
        out.append([file, line, name, "".join(linecache.getlines(file)) if cell else None])
    print("TITO-FRAMES " + json.dumps(out))
_tito_frames()
del _tito_frames
"""


@dataclass
class NotebookRun:
    """Outcome of ``run_notebook``; ``frames`` are outermost first, the failing line last."""

    notebook: Path
    ok: bool
    seconds: float
    code_cells: int
    failed_cell: int | None = None
    error: str = ""
    frames: list[Where] = field(default_factory=list)
    where_cell: Where | None = None
    kernel_log: str = ""


def _error_text(cell) -> str:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            value = str(out.get("evalue") or "").strip()
            return f"{out.get('ename')}: {value}" if value else str(out.get("ename"))
    return ""


def _kernel_frames(client, index: int) -> list:
    """Ask the kernel for the frames of its last traceback ([] if it cannot say)."""
    import nbformat

    probe = nbformat.v4.new_code_cell(_FRAMES_SNIPPET)
    try:
        client.execute_cell(probe, index, store_history=False)
    except Exception:  # a dead or stuck kernel only loses the detail
        return []
    for out in probe.get("outputs", []):
        text = out.get("text", "")
        if out.get("output_type") == "stream" and "TITO-FRAMES " in text:
            return json.loads(text.split("TITO-FRAMES ", 1)[1])
    return []


def run_notebook(project, notebook: Path, announce: bool = True) -> NotebookRun:
    """Execute ``notebook`` (jupytext ``.py``) cell by cell; stop at the first failure."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    from tito.pytest_run import project_env

    notebook = Path(notebook)
    nbl = NotebookLines(project, notebook)
    # the client's own copy: nbclient stores every executed cell (the probe too) into it
    nb = copy.deepcopy(nbl.nb)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(notebook.parent)}})
    code_cells = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    if announce:
        print(f"running {nbl.rel} in a fresh kernel ({len(code_cells)} code cells) ...", flush=True)
    start = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+", prefix="tito-kernel-") as log:
        run = NotebookRun(notebook, True, 0.0, len(code_cells))
        with client.setup_kernel(env=project_env(project), stderr=log, stdout=log):
            for i, cell in code_cells:
                try:
                    client.execute_cell(cell, i)
                except (CellExecutionError, CellTimeoutError, DeadKernelError) as e:
                    run.ok, run.failed_cell = False, i
                    run.error = _error_text(cell) or f"{type(e).__name__}: {str(e).strip().splitlines()[-1:]}"
                    run.where_cell = nbl.at(i, 1)
                    if isinstance(e, CellExecutionError):
                        run.frames = from_kernel_frames(_kernel_frames(client, i), nbl)
                    else:
                        log.seek(0)
                        run.kernel_log = log.read()
                    break
    run.seconds = time.perf_counter() - start
    return run


def print_run(run: NotebookRun, max_frames: int = 3) -> None:
    """The outcome in a few lines: where it failed in the ``.py`` and the error."""
    if run.ok:
        print(f"notebook OK: {run.code_cells} code cells ran without error in {run.seconds:.0f} s")
        return
    frames = run.frames[-max_frames:]
    if frames:
        first, *inner = frames
        print(f"notebook FAILED at {first.path}:{first.line}" + (f" in {first.func}" if first.func else ""))
        print(f"      {first.line} | {first.code.strip()}")
        for w in inner:
            print(f"  called {w.path}:{w.line}" + (f" in {w.func}" if w.func else ""))
            print(f"      {w.line} | {w.code.strip()}")
    elif run.where_cell is not None:
        print(f"notebook FAILED in the cell starting at {run.where_cell.path}:{run.where_cell.line}")
    else:
        print(f"notebook FAILED in code cell {run.failed_cell}")
    for line in run.error.splitlines()[:6]:
        print(f"  {line}")
    if run.kernel_log.strip():
        print("kernel log (last lines):")
        for line in run.kernel_log.strip().splitlines()[-8:]:
            print(f"  {line}")
