"""``tito checkpoint run N`` / ``tito checkpoint status``.

A checkpoint is ``tests/checkpoints/checkpoint_NN_name.py``; each test function is one
capability. ``run`` executes it with pytest (JUnit XML report) and stores the outcome in
``.tito/checkpoints.json`` at the project root (keyed by module directory name, with a
UTC timestamp). ``status`` only reads that file. ``run`` is refused unless the package is
a fresh export of the notebooks in use (``tito.workspace.choose``).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

from tito.errors import TitoError
from tito.feedback import shorten
from tito.pytest_run import Case, run_pytest

MESSAGE_WIDTH = 100


def _state_file(project):
    return project.state_dir / "checkpoints.json"


def load_state(project) -> dict:
    f = _state_file(project)
    if not f.is_file():
        return {}
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {}


def save_result(project, module, cases: list[Case]) -> dict:
    from tito.export import write_atomically

    state = load_state(project)
    entry = {
        "timestamp": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "passed": sum(c.passed for c in cases),
        "total": len(cases),
        "results": [{"capability": c.name, "outcome": c.outcome, "message": c.message} for c in cases],
    }
    state[module.dirname] = entry
    project.state_dir.mkdir(exist_ok=True)
    write_atomically(_state_file(project), json.dumps(state, indent=2, sort_keys=True) + "\n")
    return entry


def print_table(rows: list[tuple[str, str, str]]) -> None:
    head = ("capability", "result", "message")
    w0 = max([len(head[0])] + [len(r[0]) for r in rows])
    w1 = max([len(head[1])] + [len(r[1]) for r in rows])
    print(f"{head[0]:<{w0}} | {head[1]:<{w1}} | {head[2]}")
    print(f"{'-' * w0}-+-{'-' * w1}-+-{'-' * 20}")
    for cap, res, msg in rows:
        print(f"{cap:<{w0}} | {res:<{w1}} | {shorten(msg, MESSAGE_WIDTH)}")


def _label(outcome: str) -> str:
    return {"passed": "PASS", "failed": "FAIL", "error": "ERROR", "skipped": "SKIP"}.get(outcome, outcome)


def run_command(source, verbose: bool = False) -> int:
    """Run the checkpoint against the package exported from ``source`` (a ``tito.workspace.Source``)."""
    from tito.workspace import require_fresh_export

    module = source.module
    f = module.checkpoint_file
    if not f.is_file():
        raise TitoError(f"no checkpoint file {module.project.rel(f)}")
    require_fresh_export(source)
    code, cases = run_pytest(module.project, [f], quiet=not verbose)
    if not cases:
        raise TitoError(f"pytest ran no tests from {module.project.rel(f)} (exit {code})")
    entry = save_result(module.project, module, cases)
    print(f"checkpoint {module.dirname}")
    print_table([(c.name, _label(c.outcome), c.message) for c in cases])
    print(f"{entry['passed']}/{entry['total']} capabilities pass")
    ok = code == 0 and all(c.passed or c.outcome == "skipped" for c in cases)
    return 0 if ok else 1


def status_command(project, module=None) -> int:
    state = load_state(project)
    names = [module.dirname] if module else sorted(state)
    if not names or all(n not in state for n in names):
        print("checkpoints: never run" + (f" for {module.dirname}" if module else ""))
        return 0
    for n in names:
        entry = state.get(n)
        if entry is None:
            print(f"checkpoint {n}: never run")
            continue
        print(f"checkpoint {n}: {entry['passed']}/{entry['total']} pass (run {entry['timestamp']})")
        print_table([(r["capability"], _label(r["outcome"]), r["message"]) for r in entry["results"]])
        print()
    return 0
