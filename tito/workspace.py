"""The student workspace: ``tito module start | complete | status | reset``.

A student never edits the instructor's notebooks (``modules/NN_name/*_dev.py``, with the
solutions). ``tito module start`` writes the student version of every notebook of the
module (solution regions replaced by stubs, exactly as ``tito release``) to
``workspace/NN_name/``, each as a jupytext pair: ``<name>_dev.ipynb`` to open in
JupyterLab and ``<name>_dev.py`` (percent format), kept in step by jupytext's JupyterLab
integration (``pip install -e ".[student]"``). When an ``.ipynb`` was saved after its
``.py`` (JupyterLab without jupytext), tito first brings the ``.py`` up to date from it
(``sync_pair``). ``workspace/`` is gitignored.

The workspace is the module seen from ``workspace/NN_name/`` (``workspace_module``): the
same module.yaml, checkpoint and tests, notebooks read from the workspace. ``tito export |
test | grade | checkpoint run`` use it when it exists and say so; ``--solution`` picks the
instructor's notebooks, ``--notebook PATH`` one other notebook in place of the one of its
name (``choose``). Grading refuses a package that is not a fresh export of the chosen
notebooks and names the command to run (``require_fresh_export``).

Scores are kept in ``.tito/workspace.json`` (by module: score, max score, the notebooks
and a SHA-1 of their contents, the time), read by ``tito module status``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tito.errors import TitoError, UsageError

WORKSPACE = "workspace"


def workspace_dir(module) -> Path:
    return module.project.root / WORKSPACE / module.dirname


def workspace_module(module):
    """``module`` with its notebooks read from ``workspace/NN_name/`` (everything else unchanged)."""
    return dataclasses.replace(module, path=workspace_dir(module))


def started(module) -> bool:
    """True once ``tito module start`` wrote the main notebook into the workspace."""
    return workspace_module(module).notebook.is_file()


def _sha1(paths: list[Path]) -> str:
    h = hashlib.sha1()
    for p in paths:
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


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


@dataclass
class Source:
    """The notebooks a command works on: ``module``'s (the instructor's, or the workspace
    view), with ``notebook`` (from ``--notebook``) in place of the one of its name."""

    module: object
    notebook: Path | None
    whose: str

    @property
    def notebooks(self) -> list[Path]:
        paths = list(self.module.notebooks)
        if self.notebook is not None:
            names = [p.name for p in paths]
            paths[names.index(self.notebook.name) if self.notebook.name in names else 0] = self.notebook
        return paths

    @property
    def export_command(self) -> str:
        """The ``tito export`` command that exports these notebooks."""
        n = self.module.number
        if self.notebook is not None:
            return f"tito export {n} --notebook {self.module.project.rel(self.notebook)}"
        if self.whose == "solution" and started(self.module):
            return f"tito export {n} --solution"
        return f"tito export {n}"


def choose(module, solution: bool = False, notebook: str | None = None, announce: bool = True) -> Source:
    """The notebooks a command works on.

    ``notebook`` (a path) wins, then ``solution`` (the instructor's), then the student
    workspace if it was started, else the instructor's notebooks. Whenever there was a
    choice (a workspace exists or a flag was given) it is printed as
    ``notebook: PATH (whose)``; with no workspace there are only the instructor's.
    """
    project = module.project
    if notebook:
        path = Path(notebook).resolve()
        if not path.is_file():
            raise UsageError(f"--notebook {notebook}: no such file")
        if path.suffix == ".ipynb":
            raise UsageError(f"--notebook {notebook}: give the jupytext .py of the pair, not the .ipynb")
        source, shown, note = Source(module, path, "given"), [path], "given with --notebook"
    elif solution or not started(module):
        source = Source(module, None, "solution")
        shown, note = module.notebooks, "the instructor's solution"
        announce = announce and (solution or started(module))
    else:
        ws = workspace_module(module)
        missing = [py for py in ws.notebooks if not py.is_file()]
        if missing:
            raise TitoError(f"{', '.join(project.rel(p) for p in missing)} missing from your workspace: "
                            f"`tito module start {module.number}` adds it without touching your other notebooks")
        for py in ws.notebooks:
            sync_pair(project, py)
        source = Source(ws, None, "workspace")
        shown, note = [p for p in ws.notebooks if p.is_file()], "your workspace; --solution for the instructor's"
    if announce:
        print(f"notebook: {', '.join(project.rel(p) for p in shown)} ({note})")
    return source


def require_fresh_export(source: Source) -> None:
    """TitoError naming the command to run unless the package is a fresh export of ``source``."""
    from tito.export import drift

    stale, r = drift(source.module, notebook=source.notebook)
    if stale:
        project = source.module.project
        files = ", ".join(f"{project.rel(d.path)} {d.why}" for d in stale[:3])
        more = f" (and {len(stale) - 3} more)" if len(stale) > 3 else ""
        raise TitoError(f"the package is not an export of {r.sources(project)}: {files}{more}.\n"
                        f"Run `{source.export_command}` first, then run this command again.")


# ----------------------------------------------------------------------------- scores


def _state_file(project) -> Path:
    return project.state_dir / "workspace.json"


def load_scores(project) -> dict:
    f = _state_file(project)
    try:
        return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}
    except json.JSONDecodeError:
        return {}


def save_score(source: Source, result: dict) -> None:
    """Remember the score of the module and which notebooks (and versions of them) it was for."""
    from tito.export import write_atomically

    project = source.module.project
    notebooks = [p for p in source.notebooks if p.is_file()]
    state = load_scores(project)
    state[source.module.dirname] = {
        "score": result["score"], "max_score": result["max_score"],
        "when": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "notebooks": [project.rel(p) for p in notebooks], "sha1": _sha1(notebooks)}
    project.state_dir.mkdir(exist_ok=True)
    write_atomically(_state_file(project), json.dumps(state, indent=2, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------- verbs


def _handouts(module) -> list[tuple[Path, object]]:
    """``(workspace .py path, student notebook)`` for every notebook of the module, as
    ``tito module start`` writes them (a jupytext pair with stable cell ids)."""
    from tito.notebook import stable_ids
    from tito.release import student_notebooks

    out = []
    for src, nb in student_notebooks(module):
        stable_ids(nb)
        nb.metadata.setdefault("jupytext", {})["formats"] = "ipynb,py:percent"
        out.append((workspace_dir(module) / src.name, nb))
    return out


def _write_student_pairs(module, only: set[str] | None = None) -> list[Path]:
    """Write the student version of every notebook (or of those named in ``only``) into the
    workspace as a jupytext pair; returns the .py files written."""
    from tito.notebook import write_ipynb, write_py

    written = []
    for py, nb in _handouts(module):
        if only is not None and py.name not in only:
            continue
        # the .ipynb first: jupytext refuses a pair whose .ipynb is newer than its text file
        write_ipynb(nb, py.with_suffix(".ipynb"))
        write_py(nb, py)
        written.append(py)
    return written


def untouched(module) -> set[Path]:
    """The workspace notebooks that are still exactly the handout (nothing written yet)."""
    import jupytext

    return {py for py, nb in _handouts(module)
            if py.is_file() and py.read_text(encoding="utf-8") == jupytext.writes(nb, fmt="py:percent")}


def _first_exercise(module, py: Path):
    """The first stub line of the workspace notebook ``py`` (a ``Where``), or None."""
    from tito.feedback import NotebookLines

    nbl = NotebookLines(module.project, py)
    for i, cell in enumerate(nbl.nb.cells):
        if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("solution"):
            for k, line in enumerate(cell.source.split("\n"), start=1):
                if line.strip() == "raise NotImplementedError()":
                    return nbl.at(i, k)
    return None


def _next_steps(module, written: list[Path]) -> None:
    project = module.project
    main = written[0]
    first = _first_exercise(module, main)
    print("next steps:")
    print(f"  1. open it: jupyter lab {project.rel(main.with_suffix('.ipynb'))}")
    if importlib.util.find_spec("jupyterlab") is None or importlib.util.find_spec("jupytext") is None:
        print('     (JupyterLab is not installed here: python -m pip install -e ".[student]")')
    if first is not None:
        what = f" of {first.func}" if first.func else ""
        print(f"  2. write the first exercise: replace `raise NotImplementedError()`{what} "
              f"({first.short} in the .py) with your code, run the cell and the test cell below it")
    else:
        print("  2. fill in the cells that read `raise NotImplementedError()`")
    if len(written) > 1:
        print(f"     then the other notebooks: {', '.join(p.with_suffix('.ipynb').name for p in written[1:])}")
    print(f"  3. tito module complete {module.number}: exports your code into the package, runs your "
          "notebooks and the checkpoint, and prints your score with what to fix first")


def _workspace_files(module) -> list[Path]:
    return [p for py in workspace_module(module).notebooks for p in (py, py.with_suffix(".ipynb")) if p.exists()]


def start_command(module) -> int:
    """Write the student notebooks into the workspace. Never overwrites: with work already
    there, only notebooks the workspace lacks (added to the module since) are written."""
    project = module.project
    existing = _workspace_files(module)
    missing = {py.name for py in workspace_module(module).notebooks
               if not py.exists() and not py.with_suffix(".ipynb").exists()}
    if existing and not missing:
        raise TitoError(f"{', '.join(project.rel(p) for p in existing)} already hold your work: "
                        f"open it, or `tito module reset {module.number}` to back it up and start again")
    written = _write_student_pairs(module, only=missing if existing else None)
    ipynbs = ", ".join(project.rel(p.with_suffix(".ipynb")) for p in written)
    if existing:
        print(f"added to your workspace: {ipynbs} (your other notebooks are kept as they are)")
        return 0
    print(f"started {module.dirname}: your notebook{'s are' if len(written) > 1 else ' is'} {ipynbs} "
          f"(each paired with its .py; the instructor's in {project.rel(module.path)}/ are not touched)")
    _next_steps(module, written)
    return 0


def reset_command(module) -> int:
    """Back the workspace notebooks up (timestamped folder), then write fresh copies."""
    project = module.project
    existing = _workspace_files(module)
    if existing:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        backup, k = workspace_dir(module) / f"backup-{stamp}", 2
        while backup.exists():
            backup, k = workspace_dir(module) / f"backup-{stamp}-{k}", k + 1
        backup.mkdir(parents=True)
        for p in existing:
            shutil.copy2(p, backup / p.name)
        print(f"backed up your work to {project.rel(backup)}/")
    written = _write_student_pairs(module)
    print(f"fresh copies written: {', '.join(project.rel(p.with_suffix('.ipynb')) for p in written)}")
    _next_steps(module, written)
    return 0


def complete_command(module, verbose: bool = False) -> int:
    """Export the workspace notebooks, run each headless, run the checkpoint, print the score.

    A notebook still exactly as handed out is not run (it would stop at its first
    exercise). Exit 0 when every notebook that ran ran without error and the score is full.
    """
    from tito.export import export_command
    from tito.grading import _fmt, first_failure, grade, print_fix_first, print_table
    from tito.kernel import print_run, run_notebook

    project = module.project
    if not started(module):
        raise TitoError(f"no workspace for {module.dirname}: run `tito module start {module.number}` first")
    source = choose(module, announce=False)
    notebooks = source.notebooks
    print(f"[1/3] export {', '.join(project.rel(p) for p in notebooks)} into the package")
    export_command(source.module)
    print("[2/3] run your notebook" + ("s" if len(notebooks) > 1 else "") + " headless")
    runs, handouts = [], untouched(module) if source.whose == "workspace" else set()
    for py in notebooks:
        if py in handouts:  # it would stop at its first exercise: nothing to learn from running it
            print(f"{project.rel(py)}: not started (still the handout), not run")
            continue
        runs.append(run_notebook(project, py))
        print_run(runs[-1])
    print(f"[3/3] checkpoint {project.rel(module.checkpoint_file)}")
    result = grade(module, verbose=verbose, module_tests=False)
    print_table(result)
    score, max_score = result["score"], result["max_score"]
    print(f"score: {_fmt(score)}/{_fmt(max_score)}")
    save_score(source, result)
    failed = next((run for run in runs if not run.ok), None)
    if failed is not None and failed.frames:
        where = failed.frames[-1]
        print(f"fix first: the notebook stops at {where.path}:{where.line}"
              + (f" in {where.func}" if where.func else ""))
        print(f"      {where.line} | {where.code.strip()}")
        print(f"  {failed.error.splitlines()[0] if failed.error else ''}")
    elif failed is not None:
        print(f"fix first: {project.rel(failed.notebook)} does not run to the end (see above)")
    elif first_failure(result) is not None:
        print_fix_first(first_failure(result))
    else:
        print(f"{module.dirname} complete: full marks")
    return 0 if failed is None and score == max_score else 1


def status_command(project, module=None) -> int:
    """Per module: started (workspace), what the package holds, last score."""
    from tito.export import drift

    scores = load_scores(project)
    rows = []
    for mod in [module] if module else project.modules():
        ws = workspace_module(mod)
        is_started = started(mod)
        started_col = project.rel(ws.notebook) if is_started else f"no (tito module start {mod.number})"
        try:
            if is_started and not drift(ws)[0]:
                holds = "your notebook (in sync)"
            elif not drift(mod)[0]:
                holds = "the instructor's solution"
            else:
                holds = f"out of date: tito export {mod.number}" if is_started else "out of date"
        except TitoError as e:
            holds = f"cannot export: {str(e).splitlines()[0]}"
        entry = scores.get(mod.dirname)
        if entry is None:
            score = "never graded"
        else:
            score = f"{entry['score']:g}/{entry['max_score']:g} ({entry['when']}"
            paths = [project.root / p for p in entry.get("notebooks", [])]
            if paths and (not all(p.is_file() for p in paths) or _sha1(paths) != entry.get("sha1")):
                score += ", notebook changed since"
            score += ")"
        rows.append((mod.dirname, started_col, holds, score))
    head = ("module", "started", "package holds", "last score")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head[:3])]
    for r in [head, *rows]:
        print("  ".join(f"{c:<{w}}" for c, w in zip(r[:3], widths)) + "  " + r[3])
    return 0
