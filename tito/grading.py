"""``tito grade``: score a module's checkpoint and module tests against the package.

Only the capabilities score: the tests of the checkpoint file. Their points are declared
in one place, the checkpoint file itself, as a module-level literal dict::

    POINTS = {"test_prunes_to_target_sparsity": 3, "test_quantize_roundtrip": 2}

keyed by test function name. tito reads it with ``ast`` (the file is not imported), so a
broken package cannot hide the point values. Tests not listed are worth 1 point; every
case of a parametrized test is worth the function's points. Unknown names in ``POINTS``
are reported as warnings. If the file cannot even be imported, it scores 0 out of what its
``test*`` functions (found with ``ast``) are worth.

The module's own tests (``tests/NN_name/``) run too and are reported with 0 points: they
check many small behaviours, some of them in code the students are given (argument
validation), so scoring them would hand out points for an empty solution. Any failure
among them still makes the exit status non-zero.

Tests run in a pytest subprocess (``tito.pytest_run``) from the project root, so they
import the package exactly as currently exported. Exit status is 0 only for full marks.
``--json FILE`` writes a Gradescope-style ``results.json``::

    {"score": s, "max_score": m,
     "tests": [{"name": ..., "score": ..., "max_score": ..., "output": ...}, ...]}
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

from tito.errors import TitoError
from tito.pytest_run import run_pytest


def read_points(test_file: Path) -> dict[str, float]:
    """The ``POINTS`` dict declared at module level in ``test_file`` ({} if none)."""
    try:
        tree = ast.parse(test_file.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) and node.value is not None else [])
        if any(getattr(t, "id", None) == "POINTS" for t in targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                raise TitoError(f"{test_file}: POINTS must be a literal dict of name -> number") from None
            if not isinstance(value, dict) or not all(
                    isinstance(k, str) and isinstance(v, (int, float)) for k, v in value.items()):
                raise TitoError(f"{test_file}: POINTS must map test names to numbers")
            return value
    return {}


def _file_max_score(test_file: Path, pts: dict[str, float]) -> float:
    """What the tests defined in ``test_file`` are worth (for files that fail to import)."""
    try:
        tree = ast.parse(test_file.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return sum(pts.values()) or 1
    names = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name.startswith("Test")):
        names += [n.name for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return sum(pts.get(n, 1) for n in names if n.startswith("test")) or 1


def _test_files(module) -> list[Path]:
    files = []
    if module.checkpoint_file.is_file():
        files.append(module.checkpoint_file)
    if module.tests_dir.is_dir():
        files.extend(sorted(module.tests_dir.rglob("test_*.py")))
    return files


def grade(module, verbose: bool = False) -> dict:
    project = module.project
    files = _test_files(module)
    if not files:
        raise TitoError(f"nothing to grade: neither {project.rel(module.checkpoint_file)} "
                        f"nor {project.rel(module.tests_dir)}/test_*.py exist")
    checkpoint = project.rel(module.checkpoint_file)
    points = {project.rel(f): read_points(f) for f in files}
    _, cases = run_pytest(project, files, quiet=not verbose)

    tests, seen = [], {}
    for c in cases:
        file_points = points.get(c.file, {})
        if c.is_collection_error:
            # the whole file failed to import: it scores 0 of what its tests are worth
            rel = c.file if c.file in points else next(
                (k for k in points if Path(k).stem == c.name.rsplit(".", 1)[-1]), None)
            max_score = (_file_max_score(project.root / rel, points[rel]) if rel else 1) if rel == checkpoint else 0
            label = f"{Path(rel).stem if rel else c.name} (collection)"
            seen.setdefault(rel, set()).update(points.get(rel, {}))
        else:
            max_score = file_points.get(c.base_name, 1) if c.file == checkpoint else 0
            label = f"{Path(c.file).stem}::{c.name}"
        seen.setdefault(c.file, set()).add(c.base_name)
        if c.outcome == "skipped":
            continue
        tests.append({"name": label, "passed": c.passed, "graded": c.file == checkpoint or
                      (c.is_collection_error and rel == checkpoint),
                      "score": max_score if c.passed else 0, "max_score": max_score,
                      "output": "" if c.passed else (c.output or c.message)[-4000:],
                      "message": c.message})
    for rel, pts in points.items():
        for name in sorted(set(pts) - seen.get(rel, set())):
            print(f"warning: {rel}: POINTS names '{name}' but no such test ran")
    if not tests:
        raise TitoError("pytest reported no tests")
    return {"score": sum(t["score"] for t in tests),
            "max_score": sum(t["max_score"] for t in tests),
            "module_failures": sum(not t["passed"] for t in tests if not t["graded"]),
            "tests": tests}


def _fmt(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def grade_command(module, json_path: str | None = None, verbose: bool = False) -> int:
    result = grade(module, verbose=verbose)
    graded = [t for t in result["tests"] if t["graded"]]
    others = [t for t in result["tests"] if not t["graded"]]
    width = max(len(t["name"]) for t in result["tests"])
    print(f"grading {module.dirname}")
    for t in graded + [t for t in others if not t["passed"]]:
        mark = "ok  " if t["passed"] else "FAIL"
        line = f"{mark} {t['name']:<{width}}  {_fmt(t['score'])}/{_fmt(t['max_score'])}"
        if t["message"] and not t["passed"]:
            line += f"  {t['message'][:100]}"
        print(line)
    if others:
        print(f"module tests (0 points): {len(others) - result['module_failures']}/{len(others)} passed")
    print(f"total: {_fmt(result['score'])}/{_fmt(result['max_score'])}")
    if json_path:
        out = {"score": result["score"], "max_score": result["max_score"],
               "tests": [{k: t[k] for k in ("name", "score", "max_score", "output")} for t in result["tests"]]}
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {json_path}")
    return 0 if result["score"] == result["max_score"] and not result["module_failures"] else 1
