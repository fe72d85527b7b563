"""``tito grade``: score a module's checkpoint (and run its module tests) against the package.

Only the capabilities score: the tests of the checkpoint file. Their points are declared
in one place, the checkpoint file itself, as a module-level literal dict::

    POINTS = {"test_prunes_to_target_sparsity": 3, "test_quantize_roundtrip": 2}

keyed by test function name. tito reads it with ``ast`` (the file is not imported), so a
broken package cannot hide the point values. Tests not listed are worth 1 point; every
case of a parametrized test is worth the function's points. Unknown names in ``POINTS``
are reported as warnings. If the file cannot even be imported, every capability (found
with ``ast``) is reported as not run, scoring 0 of its points.

The notebook's own test cells get their nbgrader points from the same POINTS: module.yaml
maps each notebook test function to the capabilities it checks (``notebook_tests``, see
``notebook_test_points``).

The module's own tests (``tests/NN_name/``) run too and are summarised in one line: they
are not scored (some check code the students are given, so scoring them would hand out
points for an empty solution) and do not change the exit status, which is 0 exactly when
the score is full.

Tests run in a pytest subprocess (``tito.pytest_run``) from the project root, so they
import the package exactly as currently exported; the caller checks that export is
fresh (``tito.workspace.require_fresh_export``). Failures are located in the notebook the
package line was exported from (``tito.feedback``). ``--json FILE`` writes a Gradescope-style
``results.json``::

    {"score": s, "max_score": m,
     "tests": [{"name": ..., "score": ..., "max_score": ..., "output": ...}, ...]}
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

from tito.errors import TitoError
from tito.feedback import PackageLines, Where, from_pytest_output, shorten
from tito.pytest_run import run_pytest

TABLE_WIDTH = 100
MIN_MESSAGE = 60  # a message column narrower than this says too little


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


def capability_names(test_file: Path) -> list[str]:
    """The test functions defined in ``test_file`` (top level and ``Test*`` classes), in order."""
    try:
        tree = ast.parse(test_file.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return []
    funcs = (ast.FunctionDef, ast.AsyncFunctionDef)
    names = []
    for node in tree.body:
        if isinstance(node, funcs):
            names.append(node.name)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            names += [n.name for n in node.body if isinstance(n, funcs)]
    return [n for n in names if n.startswith("test")]


def notebook_test_points(module, notebook_tests: list[str]) -> dict[str, float]:
    """Points of each test function of the notebook, for nbgrader's grade cells.

    module.yaml ``notebook_tests`` maps every notebook test to the checkpoint capabilities
    it checks (``[]``: checked but not graded); a notebook test is worth the sum of their
    POINTS, so the nbgrader total equals the checkpoint total. Without that key every
    notebook test is worth 1 point. The mapping must name every notebook test and only
    those, and every capability exactly once: TitoError lists what does not fit.
    """
    mapping = module.meta.get("notebook_tests")
    if mapping is None:
        return {t: 1 for t in notebook_tests}
    yml = module.project.rel(module.path / "module.yaml")
    if not isinstance(mapping, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and all(isinstance(c, str) for c in v)
            for k, v in mapping.items()):
        raise TitoError(f"{yml}: notebook_tests must map test names to lists of capability names")
    checkpoint = module.checkpoint_file
    caps = capability_names(checkpoint)
    points = read_points(checkpoint)
    problems = [f"notebook test {t} is not in notebook_tests" for t in notebook_tests if t not in mapping]
    problems += [f"notebook_tests names {t}, which the notebook does not define"
                 for t in mapping if t not in notebook_tests]
    listed = [c for cs in mapping.values() for c in cs]
    problems += [f"capability {c} is not in {module.project.rel(checkpoint)}" for c in dict.fromkeys(listed)
                 if c not in caps]
    problems += [f"capability {c} is listed {listed.count(c)} times" for c in dict.fromkeys(listed)
                 if listed.count(c) > 1]
    problems += [f"capability {c} ({points.get(c, 1):g} points) is checked by no notebook test"
                 for c in caps if c not in listed]
    if problems:
        raise TitoError(f"{yml}: notebook_tests does not match the notebook and the checkpoint:\n  "
                        + "\n  ".join(problems))
    return {t: sum(points.get(c, 1) for c in mapping[t]) for t in notebook_tests}


def _test_files(module, module_tests: bool) -> list[Path]:
    files = []
    if module.checkpoint_file.is_file():
        files.append(module.checkpoint_file)
    if module_tests and module.tests_dir.is_dir():
        files.extend(sorted(module.tests_dir.rglob("test_*.py")))
    return files


def _case_file(case, rels: list[str]) -> str | None:
    """The test file (relative path) a pytest case belongs to; collection errors are named
    after the file's dotted module."""
    if case.file in rels:
        return case.file
    stem = case.name.rsplit(".", 1)[-1]
    return next((r for r in rels if Path(r).stem == stem), None)


def _message(case, where: Where | None) -> str:
    """One line saying what is wrong, with the notebook line when the error is in the code."""
    msg = case.message
    if msg.startswith("AssertionError: "):
        return msg[len("AssertionError: "):]
    if where is None:
        return msg
    if msg.startswith("NotImplementedError") and where.func:
        return f"{where.func} is not written yet ({where.short})"
    return f"{msg} ({where.short})"


def grade(module, verbose: bool = False, module_tests: bool = True) -> dict:
    """Run the checkpoint (and the module tests) and score them.

    Returns ``{"score", "max_score", "checkpoint", "capabilities": [...], "module_tests":
    [...]}``; each entry has name, passed, score, max_score, message, output and where (the
    notebook line of a failure, a ``Where``, or None).
    """
    project = module.project
    files = _test_files(module, module_tests)
    if not module.checkpoint_file.is_file():
        raise TitoError(f"nothing to grade: {project.rel(module.checkpoint_file)} does not exist")
    rels = [project.rel(f) for f in files]
    checkpoint = project.rel(module.checkpoint_file)
    points = read_points(module.checkpoint_file)
    package = PackageLines(project)
    _, cases = run_pytest(project, files, quiet=not verbose)

    capabilities, others, ran = [], [], set()
    for c in cases:
        rel = _case_file(c, rels)
        if c.outcome == "skipped":
            continue
        where = None if c.passed else from_pytest_output(c.output, project, package)
        entry = {"passed": c.passed, "message": "" if c.passed else _message(c, where),
                 "output": "" if c.passed else (c.output or c.message)[-4000:], "where": where}
        if rel == checkpoint and c.is_collection_error:
            # the checkpoint could not be imported: no capability ran
            for name in capability_names(module.checkpoint_file):
                pts = points.get(name, 1)
                capabilities.append({**entry, "name": name, "score": 0, "max_score": pts,
                                     "message": f"not run: {c.message}"})
                ran.add(name)
        elif rel == checkpoint:
            pts = points.get(c.base_name, 1)
            capabilities.append({**entry, "name": c.name, "score": pts if c.passed else 0, "max_score": pts})
            ran.add(c.base_name)
        else:
            label = f"{Path(rel).stem if rel else c.name}::{c.name}" if not c.is_collection_error \
                else f"{Path(rel).stem if rel else c.name} (collection)"
            others.append({**entry, "name": label, "score": 0, "max_score": 0})
    for name in sorted(set(points) - ran):
        print(f"warning: {checkpoint}: POINTS names '{name}' but no such test ran")
    if not capabilities:
        raise TitoError(f"pytest ran no test of {checkpoint}")
    return {"score": sum(t["score"] for t in capabilities),
            "max_score": sum(t["max_score"] for t in capabilities),
            "checkpoint": Path(checkpoint).stem, "capabilities": capabilities, "module_tests": others}


def grade_bonus(module, verbose: bool = False) -> list[dict]:
    """Score each bonus checkpoint (the going-further notebooks) on its own: a list of
    ``{"checkpoint", "score", "max_score", "capabilities"}``, never part of the module's score."""
    results = []
    for path in module.bonus_checkpoint_files:
        points = read_points(path)
        _, cases = run_pytest(module.project, [path], quiet=not verbose)
        capabilities = []
        for c in cases:
            if c.outcome == "skipped":
                continue
            if c.is_collection_error:  # the checkpoint could not be imported: nothing ran
                capabilities = [{"name": name, "passed": False, "score": 0, "max_score": points.get(name, 1),
                                 "message": f"not run: {c.message}", "output": c.output or c.message}
                                for name in capability_names(path)]
                break
            pts = points.get(c.base_name, 1)
            capabilities.append({"name": c.name, "passed": c.passed, "score": pts if c.passed else 0,
                                 "max_score": pts, "message": "" if c.passed else _message(c, None),
                                 "output": "" if c.passed else (c.output or c.message)[-4000:]})
        results.append({"checkpoint": path.stem, "capabilities": capabilities,
                        "score": sum(t["score"] for t in capabilities),
                        "max_score": sum(t["max_score"] for t in capabilities)})
    return results


def bonus_line(bonus: dict) -> str:
    """One line per bonus checkpoint: its points and its first failing capability."""
    failing = [t for t in bonus["capabilities"] if not t["passed"]]
    line = f"bonus {bonus['checkpoint']}: {_fmt(bonus['score'])}/{_fmt(bonus['max_score'])} (not in the score)"
    if failing:
        line += f"; first to fix: {failing[0]['name']} ({len(failing)} failing)"
    return line


def _fmt(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def print_table(result: dict) -> None:
    """One row per capability: name, points, PASS/FAIL, the first line of what is wrong."""
    caps = result["capabilities"]
    w_name = max(len("capability"), *(len(t["name"]) for t in caps))
    pts = [f"{_fmt(t['score'])}/{_fmt(t['max_score'])}" for t in caps]
    w_pts = max(len("points"), *(len(p) for p in pts))
    w_msg = max(MIN_MESSAGE, TABLE_WIDTH - w_name - w_pts - 12)
    print(f"{'capability':<{w_name}}  {'points':>{w_pts}}  result  message")
    for t, p in zip(caps, pts):
        mark = "PASS" if t["passed"] else "FAIL"
        print(f"{t['name']:<{w_name}}  {p:>{w_pts}}  {mark:<6}  {shorten(t['message'], w_msg)}".rstrip())


def module_tests_line(result: dict, module) -> str | None:
    """The module tests in one line (they never count towards the score)."""
    tests = result["module_tests"]
    if not tests:
        return None
    failing = [t["name"].split("::")[-1] for t in tests if not t["passed"]]
    line = f"module tests (not scored): {len(tests) - len(failing)}/{len(tests)} pass"
    if failing:
        shown = ", ".join(failing[:3]) + (f" and {len(failing) - 3} more" if len(failing) > 3 else "")
        line += f"; failing: {shown} (tito test {module.number} shows why)"
    return line


def first_failure(result: dict) -> dict | None:
    """The first capability that fails, in checkpoint (= lesson) order."""
    return next((t for t in result["capabilities"] if not t["passed"]), None)


def print_fix_first(t: dict) -> None:
    print(f"fix first: {t['name']} ({_fmt(t['max_score'])} point{'s' * (t['max_score'] != 1)})")
    if t["where"] is not None:
        for line in t["where"].lines():
            print(line)
    print(f"  {shorten(t['message'], TABLE_WIDTH - 2)}")


def write_json(result: dict, json_path: str, bonuses: list | None = None) -> None:
    """Gradescope-style results: capabilities as ``<checkpoint>::<name>``, module tests at 0,
    bonus capabilities as extra credit (max_score 0: Gradescope adds a score above the maximum
    as extra credit); the top-level score is the module's score alone."""
    tests = [{"name": f"{result['checkpoint']}::{t['name']}", "score": t["score"],
              "max_score": t["max_score"], "output": t["output"]} for t in result["capabilities"]]
    tests += [{k: t[k] for k in ("name", "score", "max_score", "output")} for t in result["module_tests"]]
    tests += [{"name": f"{b['checkpoint']}::{t['name']}", "score": t["score"], "max_score": 0,
               "output": t["output"]} for b in bonuses or [] for t in b["capabilities"]]
    out = {"score": result["score"], "max_score": result["max_score"], "tests": tests}
    Path(json_path).parent.mkdir(parents=True, exist_ok=True)
    Path(json_path).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


def grade_command(source, json_path: str | None = None, verbose: bool = False) -> int:
    """Grade the package exported from ``source`` (a ``tito.workspace.Source``; the caller
    checked the export is fresh). Exit status 0 exactly when the score is full."""
    from tito.workspace import save_score

    module = source.module
    result = grade(module, verbose=verbose)
    print_table(result)
    line = module_tests_line(result, module)
    if line:
        print(line)
    score, max_score = result["score"], result["max_score"]
    print(f"score: {_fmt(score)}/{_fmt(max_score)}")
    first = first_failure(result)
    if first is not None:
        print_fix_first(first)
    bonuses = grade_bonus(module, verbose=verbose)
    for bonus in bonuses:
        print(bonus_line(bonus))
    save_score(source, result)
    if json_path:
        write_json(result, json_path, bonuses)
        print(f"wrote {json_path}")
    return 0 if score == max_score else 1
