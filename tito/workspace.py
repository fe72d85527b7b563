"""The student workspace: ``tito module start | complete | status | reset``.

A student never edits the instructor's notebook (``modules/NN_name/<name>_dev.py``, the
solution). ``tito module start`` writes the student version (solution regions replaced
by stubs, exactly as ``tito release``) to ``workspace/NN_name/`` as a jupytext pair:
``<name>_dev.ipynb`` to open in JupyterLab and ``<name>_dev.py`` (percent format), kept in
step by jupytext's JupyterLab integration (``pip install -e ".[student]"``). When the
``.ipynb`` was saved after the ``.py`` (JupyterLab without jupytext), tito first brings
the ``.py`` up to date from it (``sync_pair``). ``workspace/`` is gitignored.

``tito export | test | grade | checkpoint run`` use the workspace notebook when there is
one and say so; ``--solution`` picks the instructor's notebook, ``--notebook PATH`` any
other (``choose_notebook``). Grading refuses a package that is not a fresh export of the
chosen notebook and names the command to run (``require_fresh_export``).

Scores are kept in ``.tito/workspace.json`` (by module: score, max score, notebook,
its SHA-1 and the time), read by ``tito module status``.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

from tito.errors import TitoError, UsageError

WORKSPACE = "workspace"


def workspace_dir(module) -> Path:
    return module.project.root / WORKSPACE / module.dirname


def workspace_notebook(module) -> Path:
    """``workspace/NN_name/<notebook name>.py`` (it may not exist yet)."""
    return workspace_dir(module) / module.notebook.name


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def sync_pair(project, py: Path) -> bool:
    """If the paired ``.ipynb`` was saved after ``py``, rewrite ``py`` from it (atomically).

    Returns True when ``py`` changed. Only the text changes: a notebook opened without
    jupytext's JupyterLab integration saves only the ``.ipynb``.
    """
    import jupytext

    from tito.export import write_atomically

    ipynb = py.with_suffix(".ipynb")
    if not (ipynb.is_file() and py.is_file()) or ipynb.stat().st_mtime <= py.stat().st_mtime:
        return False
    try:
        nb = jupytext.read(str(ipynb))
    except Exception as e:  # a half-written or hand-edited .ipynb
        raise TitoError(f"cannot read {project.rel(ipynb)}: {e}") from None
    text = jupytext.writes(nb, fmt="py:percent")
    if text == py.read_text(encoding="utf-8"):
        return False
    write_atomically(py, text)
    print(f"updated {project.rel(py)} from {ipynb.name} (saved later)")
    return True


def choose_notebook(module, solution: bool = False, notebook: str | None = None,
                    announce: bool = True) -> Path:
    """The notebook a command works on.

    ``notebook`` (a path) wins, then ``solution`` (the instructor's), then the student
    workspace if it was started, else the instructor's notebook. Whenever there was a
    choice (a workspace exists or a flag was given) it is printed as
    ``notebook: PATH (whose)``; with no workspace there is only the instructor's.
    """
    project = module.project
    if notebook:
        path = Path(notebook).resolve()
        if not path.is_file():
            raise UsageError(f"--notebook {notebook}: no such file")
        if path.suffix == ".ipynb":
            raise UsageError(f"--notebook {notebook}: give the jupytext .py of the pair, not the .ipynb")
        whose = "given with --notebook"
    elif solution or not workspace_notebook(module).is_file():
        path = module.require_notebook()
        whose = "the instructor's solution"
        announce = announce and (solution or workspace_notebook(module).is_file())
    else:
        path = workspace_notebook(module)
        sync_pair(project, path)
        whose = "your workspace; --solution for the instructor's"
    if announce:
        print(f"notebook: {project.rel(path)} ({whose})")
    return path


def export_args(module, notebook: Path) -> str:
    """The ``tito export`` command that exports ``notebook``."""
    if notebook == workspace_notebook(module):
        return f"tito export {module.number}"
    if notebook == module.notebook.resolve() or notebook == module.notebook:
        flag = " --solution" if workspace_notebook(module).is_file() else ""
        return f"tito export {module.number}{flag}"
    return f"tito export {module.number} --notebook {module.project.rel(notebook)}"


def require_fresh_export(module, notebook: Path) -> None:
    """TitoError naming the command to run unless the package is a fresh export of ``notebook``."""
    from tito.export import drift

    stale, _ = drift(module, notebook=notebook)
    if stale:
        project = module.project
        files = ", ".join(f"{project.rel(d.path)} {d.why}" for d in stale[:3])
        more = f" (and {len(stale) - 3} more)" if len(stale) > 3 else ""
        raise TitoError(f"the package is not an export of {project.rel(notebook)}: {files}{more}.\n"
                        f"Run `{export_args(module, notebook)}` first, then run this command again.")


# ----------------------------------------------------------------------------- scores


def _state_file(project) -> Path:
    return project.state_dir / "workspace.json"


def load_scores(project) -> dict:
    f = _state_file(project)
    try:
        return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}
    except json.JSONDecodeError:
        return {}


def save_score(module, notebook: Path | None, result: dict) -> None:
    """Remember the score of ``module`` and which notebook (and version of it) it was for."""
    from tito.export import write_atomically

    project = module.project
    state = load_scores(project)
    entry = {"score": result["score"], "max_score": result["max_score"],
             "when": datetime.now(timezone.utc).replace(microsecond=0).isoformat()}
    if notebook is not None and Path(notebook).is_file():
        entry.update(notebook=project.rel(notebook), sha1=_sha1(Path(notebook)))
    state[module.dirname] = entry
    project.state_dir.mkdir(exist_ok=True)
    write_atomically(_state_file(project), json.dumps(state, indent=2, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------- verbs


def _write_student_pair(module) -> tuple[Path, Path]:
    """Write the student notebook into the workspace as a jupytext pair; returns (py, ipynb)."""
    from tito.notebook import stable_ids, write_ipynb, write_py
    from tito.release import student_notebook

    nb = student_notebook(module)
    stable_ids(nb)
    nb.metadata.setdefault("jupytext", {})["formats"] = "ipynb,py:percent"
    py = workspace_notebook(module)
    ipynb = py.with_suffix(".ipynb")
    # the .ipynb first: jupytext refuses a pair whose .ipynb is newer than its text file
    write_ipynb(nb, ipynb)
    write_py(nb, py)
    return py, ipynb


def _first_exercise(module, py: Path):
    """The first stub line of the workspace notebook (a ``Where``), or None."""
    from tito.feedback import NotebookLines

    nbl = NotebookLines(module.project, py)
    for i, cell in enumerate(nbl.nb.cells):
        if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("solution"):
            for k, line in enumerate(cell.source.split("\n"), start=1):
                if line.strip() == "raise NotImplementedError()":
                    return nbl.at(i, k)
    return None


def _next_steps(module, py: Path, ipynb: Path) -> None:
    project = module.project
    first = _first_exercise(module, py)
    print("next steps:")
    print(f"  1. open it: jupyter lab {project.rel(ipynb)}")
    if importlib.util.find_spec("jupyterlab") is None or importlib.util.find_spec("jupytext") is None:
        print('     (JupyterLab is not installed here: python -m pip install -e ".[student]")')
    if first is not None:
        what = f" of {first.func}" if first.func else ""
        print(f"  2. write the first exercise: replace `raise NotImplementedError()`{what} "
              f"({first.short} in the .py) with your code, run the cell and the test cell below it")
    else:
        print("  2. fill in the cells that read `raise NotImplementedError()`")
    print(f"  3. tito module complete {module.number}: exports your code into the package, runs the "
          "notebook and the checkpoint, and prints your score with what to fix first")


def start_command(module) -> int:
    """Write the student notebook into the workspace; refuse if work is already there."""
    project = module.project
    py = workspace_notebook(module)
    existing = [p for p in (py, py.with_suffix(".ipynb")) if p.exists()]
    if existing:
        raise TitoError(f"{', '.join(project.rel(p) for p in existing)} already hold your work: "
                        f"open it, or `tito module reset {module.number}` to back it up and start again")
    py, ipynb = _write_student_pair(module)
    print(f"started {module.dirname}: your notebook is {project.rel(ipynb)} "
          f"(paired with {py.name}; the instructor's {project.rel(module.notebook)} is not touched)")
    _next_steps(module, py, ipynb)
    return 0


def reset_command(module) -> int:
    """Back the workspace notebook up (timestamped folder), then write a fresh copy."""
    project = module.project
    py = workspace_notebook(module)
    pair = [p for p in (py, py.with_suffix(".ipynb")) if p.exists()]
    if pair:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        backup = workspace_dir(module) / f"backup-{stamp}"
        k = 2
        while backup.exists():
            backup, k = workspace_dir(module) / f"backup-{stamp}-{k}", k + 1
        backup.mkdir(parents=True)
        for p in pair:
            shutil.copy2(p, backup / p.name)
        print(f"backed up your work to {project.rel(backup)}/")
    py, ipynb = _write_student_pair(module)
    print(f"fresh copy written: {project.rel(ipynb)} (paired with {py.name})")
    _next_steps(module, py, ipynb)
    return 0


def complete_command(module, verbose: bool = False) -> int:
    """Export the workspace notebook, run it headless, run the checkpoint, print the score.

    Exit 0 when the notebook runs without error and the score is full.
    """
    from tito.export import export_command
    from tito.grading import _fmt, first_failure, grade, print_fix_first, print_table
    from tito.kernel import print_run, run_notebook

    project = module.project
    py = workspace_notebook(module)
    if not py.is_file():
        raise TitoError(f"no workspace for {module.dirname}: run `tito module start {module.number}` first")
    sync_pair(project, py)
    print(f"[1/3] export {project.rel(py)} into the package")
    export_command(module, notebook=py)
    print("[2/3] run the notebook headless")
    run = run_notebook(project, py)
    print_run(run)
    print(f"[3/3] checkpoint {project.rel(module.checkpoint_file)}")
    result = grade(module, notebook=py, verbose=verbose, module_tests=False)
    print_table(result)
    score, max_score = result["score"], result["max_score"]
    print(f"score: {_fmt(score)}/{_fmt(max_score)}")
    save_score(module, py, result)
    if not run.ok and run.frames:
        where = run.frames[-1]
        print(f"fix first: the notebook stops at {where.path}:{where.line}"
              + (f" in {where.func}" if where.func else ""))
        print(f"      {where.line} | {where.code.strip()}")
        print(f"  {run.error.splitlines()[0] if run.error else ''}")
    elif not run.ok:
        print("fix first: the notebook does not run to the end (see above)")
    elif first_failure(result) is not None:
        print_fix_first(first_failure(result))
    else:
        print(f"{module.dirname} complete: full marks")
    return 0 if run.ok and score == max_score else 1


def status_command(project, module=None) -> int:
    """Per module: started (workspace), what the package holds, last score."""
    from tito.export import drift

    scores = load_scores(project)
    mods = [module] if module else project.modules()
    rows = []
    for mod in mods:
        py = workspace_notebook(mod)
        started = project.rel(py) if py.is_file() else f"no (tito module start {mod.number})"
        try:
            holds = "?"
            if py.is_file() and not drift(mod, notebook=py)[0]:
                holds = "your notebook (in sync)"
            elif mod.notebook.is_file() and not drift(mod)[0]:
                holds = "the instructor's solution"
            else:
                holds = f"out of date: tito export {mod.number}" if py.is_file() else "out of date"
        except TitoError as e:
            holds = f"cannot export: {str(e).splitlines()[0]}"
        entry = scores.get(mod.dirname)
        if entry is None:
            score = "never graded"
        else:
            score = f"{entry['score']:g}/{entry['max_score']:g} ({entry['when']}"
            nb = project.root / entry.get("notebook", "")
            if entry.get("sha1") and nb.is_file() and _sha1(nb) != entry["sha1"]:
                score += ", notebook changed since"
            score += ")"
        rows.append((mod.dirname, started, holds, score))
    head = ("module", "started", "package holds", "last score")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head[:3])]
    for r in [head, *rows]:
        print("  ".join(f"{c:<{w}}" for c, w in zip(r[:3], widths)) + "  " + r[3])
    return 0
