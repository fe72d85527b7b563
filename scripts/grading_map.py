"""Which graded capability runs which solution region.

A solution region is the code between `### BEGIN SOLUTION` and `### END SOLUTION` in the
exported package (tito export copies the notebook's regions verbatim into it). A capability
is one test of a graded checkpoint of module 18 (tests/checkpoints/checkpoint_18_*.py: the
main one and any bonus one). This script runs the checkpoints in-process under a line tracer
(sys.settrace, one recording per test) and maps every region to the capabilities that
execute its statements; a capability of a bonus checkpoint is named file::test.

    python scripts/grading_map.py             # print the region -> capability table
    python scripts/grading_map.py --json      # the same as JSON (used by the CI test)
    python scripts/grading_map.py --write     # rewrite the table in docs/grading.md

A region is pinned when at least one capability that PASSES runs it; every statement of a
region should be run by one (the table lists statements no capability reaches).
"""
import argparse
import ast
import contextlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "tinytorch" / "optimization" / "compression"
CHECKPOINT = REPO / "tests" / "checkpoints" / "checkpoint_18_compression.py"
# the graded checkpoint and any bonus checkpoint of the same module (e.g. a going-further notebook's)
CHECKPOINTS = sorted((REPO / "tests" / "checkpoints").glob("checkpoint_18_*.py"))
DOC = REPO / "docs" / "grading.md"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
CELL_HEADER = re.compile(r"^# %% (\S+\.py) #")   # nbdev's marker above every exported cell
TABLE_START, TABLE_END = "<!-- region-table:start -->", "<!-- region-table:end -->"


@dataclass
class Region:
    """One BEGIN/END SOLUTION pair. `begin`/`end` are the marker lines (1-based);
    `statements` the line numbers where a statement inside the region starts."""
    path: Path
    function: str            # qualified name of the innermost enclosing def, e.g. "CSRMatrix.from_dense"
    begin: int
    end: int
    statements: list
    notebook: str = ""       # the notebook the region is exported from (its `# %% <notebook> #cell` header)
    name: str = ""           # "csr.py::CSRMatrix.from_dense" (+ "#2" for a second region in one def)
    capabilities: list = field(default_factory=list)
    missed: list = field(default_factory=list)


def _functions(tree: ast.AST) -> list:
    """[(qualified name, first line, last line)] of every def in `tree` (methods as Class.method)."""
    found = []

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    found.append((name, child.lineno, child.end_lineno))
                walk(child, name + ".")
            else:
                walk(child, prefix)

    walk(tree, "")
    return found


def find_regions(package: Path = PACKAGE) -> list:
    """Every solution region of the .py files under `package`, in file and line order.
    Raises ValueError for an unmatched marker (a region must open and close in one file)."""
    regions = []
    for path in sorted(package.rglob("*.py")):
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source)
        functions = _functions(tree)
        statement_lines = sorted({node.lineno for node in ast.walk(tree) if isinstance(node, ast.stmt)})
        begin, notebook = None, ""
        for number, text in enumerate(lines, start=1):
            marker = text.strip()
            header = CELL_HEADER.match(text)
            if header:
                notebook = Path(header.group(1)).name
            elif marker == BEGIN:
                if begin is not None:
                    raise ValueError(f"{path}:{number}: {BEGIN} inside the region opened at line {begin}")
                begin = number
            elif marker == END:
                if begin is None:
                    raise ValueError(f"{path}:{number}: {END} without {BEGIN}")
                inside = [n for n in statement_lines if begin < n < number]
                first = inside[0] if inside else begin
                enclosing = [f for f in functions if f[1] < begin and first <= f[2]]
                function = max(enclosing, key=lambda f: f[1])[0] if enclosing else "<module>"
                regions.append(Region(path, function, begin, number, inside, notebook))
                begin = None
        if begin is not None:
            raise ValueError(f"{path}:{begin}: {BEGIN} is never closed")
    seen = {}
    for region in regions:
        base = f"{region.path.relative_to(package).as_posix()}::{region.function}"
        seen[base] = seen.get(base, 0) + 1
        region.name = base if seen[base] == 1 else f"{base}#{seen[base]}"
    return regions


class LineRecorder:
    """pytest plugin: records, per test, the (file, line) pairs executed in `files`."""

    def __init__(self, files, checkpoints):
        self.files = {os.path.abspath(f) for f in files}
        self.checkpoints = checkpoints
        self.lines_by_test, self.outcome_by_test = {}, {}
        self._wanted = {}  # code object -> traced? (cached: the check runs on every call)

    def _local(self, lines):
        def trace(frame, event, arg):
            if event == "line":
                lines.add((frame.f_code.co_filename, frame.f_lineno))
            return trace
        return trace

    def _tracer(self, lines):
        local = self._local(lines)

        def trace(frame, event, arg):
            code = frame.f_code
            wanted = self._wanted.get(code)
            if wanted is None:
                wanted = self._wanted[code] = os.path.abspath(code.co_filename) in self.files
            if wanted:
                lines.add((code.co_filename, frame.f_lineno))   # the def line; harmless
                return local
            return None
        return trace

    def pytest_runtest_call(self, item):
        lines = self.lines_by_test.setdefault(capability_name(item.nodeid, self.checkpoints), set())
        sys.settrace(self._tracer(lines))

    def pytest_runtest_teardown(self, item):
        sys.settrace(None)

    def pytest_runtest_logreport(self, report):
        name = capability_name(report.nodeid, self.checkpoints)
        if report.when == "call" or report.failed:
            self.outcome_by_test[name] = "failed" if report.failed else report.outcome


def capability_name(nodeid: str, checkpoints) -> str:
    """The test name; prefixed by its checkpoint's file stem when there are several."""
    path, _, test = nodeid.rpartition("::")
    main = Path(path).name == CHECKPOINT.name or len(checkpoints) == 1
    return test if main else f"{Path(path).stem}::{test}"


def trace_checkpoints(checkpoints=None, regions: list = ()) -> LineRecorder:
    """Run the checkpoints in this process with a LineRecorder over the regions' files.
    The package is imported from REPO (the one whose regions were found), not from elsewhere."""
    import pytest

    checkpoints = [Path(c) for c in (checkpoints or CHECKPOINTS)]
    sys.path.insert(0, str(REPO))
    recorder = LineRecorder({str(r.path) for r in regions}, checkpoints)
    with contextlib.redirect_stdout(sys.stderr):  # stdout is for the table or the JSON
        code = pytest.main([*map(str, checkpoints), "-q", "-p", "no:cacheprovider", "--no-header", "-o", "addopts="],
                           plugins=[recorder])
    if code not in (0, 1):
        raise RuntimeError(f"pytest could not run {[str(c) for c in checkpoints]} (exit code {code})")
    imported = Path(sys.modules["tinytorch"].__file__).resolve()
    if REPO.resolve() not in imported.parents:
        raise RuntimeError(f"the checkpoints imported tinytorch from {imported}, not from {REPO}")
    return recorder


def build_map(package: Path = PACKAGE, checkpoints=None) -> tuple:
    """(regions with .capabilities and .missed filled in, {capability: outcome})."""
    regions = find_regions(package)
    recorder = trace_checkpoints(checkpoints, regions)
    for region in regions:
        key = os.path.abspath(region.path)
        hit = set()
        for test, lines in recorder.lines_by_test.items():
            if recorder.outcome_by_test.get(test) != "passed":
                continue
            run = {n for f, n in lines if os.path.abspath(f) == key and region.begin < n < region.end}
            if run:
                region.capabilities.append(test)
                hit |= run
        region.missed = [n for n in region.statements if n not in hit]
    return regions, recorder.outcome_by_test


def points(checkpoints=None) -> dict:
    """{capability: points} from the checkpoints' POINTS dicts, read without importing them
    (a test missing from POINTS is absent here)."""
    checkpoints = [Path(c) for c in (checkpoints or CHECKPOINTS)]
    found = {}
    for checkpoint in checkpoints:
        tree = ast.parse(checkpoint.read_text())
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "POINTS" for t in node.targets):
                for test, value in ast.literal_eval(node.value).items():
                    found[capability_name(f"{checkpoint}::{test}", checkpoints)] = value
    return found


def render_table(regions: list) -> str:
    """Markdown: one row per region, its statement count and the capabilities that run it."""
    rows = ["| notebook | region | statements | graded capabilities that run it |", "| --- | --- | --- | --- |"]
    for region in regions:
        names = ", ".join(f"`{c}`" for c in region.capabilities) or "**none**"
        if region.missed:
            names += f" (statements at lines {region.missed} not run)"
        rows.append(f"| {region.notebook} | `{region.name}` | {len(region.statements)} | {names} |")
    return "\n".join(rows)


def write_doc(table: str, doc: Path = DOC) -> None:
    """Replace the text between the region-table markers of `doc` (create the section if absent)."""
    text = doc.read_text() if doc.exists() else ""
    block = f"{TABLE_START}\n{table}\n{TABLE_END}"
    if TABLE_START in text:
        text = re.sub(re.escape(TABLE_START) + ".*?" + re.escape(TABLE_END), lambda _: block, text, flags=re.S)
    else:
        text = text + ("\n" if text else "") + block + "\n"
    doc.write_text(text)


def doc_table(doc: Path = DOC) -> str:
    """The table currently between the markers of `doc` ("" if none)."""
    text = doc.read_text() if doc.exists() else ""
    match = re.search(re.escape(TABLE_START) + "\n(.*?)\n" + re.escape(TABLE_END), text, flags=re.S)
    return match.group(1) if match else ""


def table_regions(table: str) -> list:
    """The region names of a rendered table, in order."""
    return re.findall(r"^\|[^|]*\| `([^`]+)` \|", table, flags=re.M)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", type=Path, default=PACKAGE)
    parser.add_argument("--checkpoint", type=Path, action="append",
                        help="a checkpoint file (repeatable; default: tests/checkpoints/checkpoint_18_*.py)")
    parser.add_argument("--json", action="store_true", help="print the map as JSON")
    parser.add_argument("--write", action="store_true", help=f"rewrite the table in {DOC.relative_to(REPO)}")
    args = parser.parse_args(argv)
    regions, outcomes = build_map(args.package, args.checkpoint)
    table = render_table(regions)
    if args.json:
        print(json.dumps({"outcomes": outcomes, "points": points(args.checkpoint), "table": table, "regions": [
            {"name": r.name, "notebook": r.notebook, "path": str(r.path), "begin": r.begin, "end": r.end,
             "statements": r.statements,
             "capabilities": r.capabilities, "missed": r.missed} for r in regions]}))
    else:
        print(table)
    if args.write:
        write_doc(table)
    unpinned = [r.name for r in regions if not r.capabilities]
    return 1 if unpinned else 0


if __name__ == "__main__":
    sys.exit(main())
