"""Module 18 graded end to end, on scratch copies of this repository.

The student's path: tito module start -> tito module complete on the untouched notebook scores 0
and names every capability -> the solution regions are filled in programmatically -> tito module
complete scores full marks; the instructor's notebook stays byte-identical throughout.
The instructor's path, with the real nbgrader: tito nbgrader generate -> nbgrader
generate_assignment accepts it -> nbgrader autograde gives the solution full marks and the
untouched release 0. Then plausible wrong implementations fail their capability, and the package
in git is a fresh export of the notebook.

Running the whole notebook is the slow part (about two CPU-minutes). The student's path runs it
once; nbgrader's autograde of the solution runs it once more, started in the background before
the student's path so the two share the machine's two cores instead of running one after the other.
"""
import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = "modules/18_compression"
NOTEBOOK = f"{MODULE_DIR}/compression_dev.py"             # the main lesson (the mistakes below live there)
WORKSPACE = "workspace/18_compression"
CHECKPOINT = "tests/checkpoints/checkpoint_18_compression.py"
ASSIGNMENT = "18_compression"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = re.compile(r"^([ \t]*)# YOUR CODE HERE\n\1raise NotImplementedError\(\)$", re.M)

# (what a student might get wrong, the solution's lines, the wrong lines, the capability that must fail);
# lines are matched whatever their indentation and trailing comment
WRONG_IMPLEMENTATIONS = [
    ("KD loss without the T**2 factor",
     ["return soft * (alpha * T * T) + hard * (1.0 - alpha)"],
     ["return soft * alpha + hard * (1.0 - alpha)"],
     "test_kd_loss_value"),
    ("structured pruner that forgets the next layer's inputs",
     ["_shrink(layers[name], keep_out.get(name), inputs, group)"],
     ["_shrink(layers[name], keep_out.get(name), None, group)"],
     "test_structured_dependent_shapes"),
    ("CSR indptr shifted by one row",
     ["counts = np.bincount(row_of, minlength=rows)", "indptr = np.concatenate([[0], np.cumsum(counts)])"],
     ["counts = np.bincount(row_of, minlength=rows)", "indptr = np.concatenate([[0, 0], np.cumsum(counts)[:-1]])"],
     "test_csr_from_dense_canonical"),
]


def mutate(text: str, right: list[str], wrong: list[str]) -> str:
    """``text`` with the one place where the ``right`` lines follow each other replaced by ``wrong``."""
    pattern = re.compile(r"^([ \t]*)" + r"[^\n]*\n[ \t]*".join(map(re.escape, right)) + r"[^\n]*$", re.M)
    found = pattern.findall(text)
    assert len(found) == 1, f"the notebook has {len(found)} places with {right}: update this test"
    return pattern.sub(lambda m: "\n".join(m.group(1) + line for line in wrong), text)


def _copy_tracked(dest: Path, from_index: bool = False) -> Path:
    """The repository's files as they are in the working tree (tracked, and new files not
    ignored: a student's workspace/ is ignored), or as staged in git."""
    if from_index:
        subprocess.run(["git", "checkout-index", "--all", f"--prefix={dest}/"], cwd=REPO_ROOT, check=True)
        return dest
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO_ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        if (REPO_ROOT / rel).is_file():  # a file deleted in the working tree is not copied
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / rel, target)
    return dest


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A scratch copy of the repository (no workspace, whatever the real tree holds)."""
    return _copy_tracked(tmp_path_factory.mktemp("grading") / "proj")


def tito(project, *args):
    env = dict(os.environ, PYTHONPATH=str(project))  # the copy's tinytorch and tito, not the repository's
    return subprocess.run([sys.executable, "-m", "tito", *args], cwd=project, env=env, capture_output=True,
                          text=True, timeout=900)


def capabilities(project) -> dict[str, float]:
    """Every graded capability of the checkpoint and its points, read independently of tito."""
    tree = ast.parse((project / CHECKPOINT).read_text())
    points = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                  and any(getattr(t, "id", None) == "POINTS" for t in n.targets))
    names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test")]
    return {name: points.get(name, 1) for name in names}


def solution_regions(text: str) -> list[str]:
    """The code between each BEGIN/END SOLUTION pair, markers excluded, in order."""
    regions, current = [], None
    for line in text.split("\n"):
        if line.strip().startswith(BEGIN):
            current = []
        elif line.strip().startswith(END):
            regions.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(line)
    return regions


def fill_from_solution(solution: str, student: str) -> str:
    """The student notebook with every stub replaced by the matching solution region."""
    regions, stubs = solution_regions(solution), list(STUB.finditer(student))
    assert len(stubs) == len(regions) > 0, f"{len(stubs)} stubs for {len(regions)} solution regions"
    out, last = [], 0
    for stub, region in zip(stubs, regions):
        out += [student[last:stub.start()], region]
        last = stub.end()
    return "".join(out) + student[last:]


def nbgrader(course: Path, root: Path, *args, **kwargs):
    """Run the real nbgrader in ``course`` with ``root``'s tinytorch importable (kernels too)."""
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, **kwargs)


@pytest.fixture(scope="module")
def autograde(tmp_path_factory):
    """An nbgrader course for module 18 whose autograde is running in the background.

    Yields (course dir, scratch repository, the autograde process) or None without nbgrader.
    Submissions: ``solution`` (the source notebook) and ``untouched`` (the released notebook).
    """
    if importlib.util.find_spec("nbgrader") is None:
        yield None
        return
    base = tmp_path_factory.mktemp("nbgrader")
    root, course = _copy_tracked(base / "proj"), base / "course"
    made = tito(root, "nbgrader", "generate", "18", "--out", str(course))
    assert made.returncode == 0, made.stdout + made.stderr
    released = nbgrader(course, root, "generate_assignment", ASSIGNMENT, capture_output=True, text=True,
                        timeout=600)
    assert released.returncode == 0, released.stdout[-3000:] + released.stderr[-3000:]
    # submissions hold the notebooks with grade cells; nbgrader treats the others as missing (no points)
    for student, folder in (("solution", course / "source"), ("untouched", course / "release")):
        dest = course / "submitted" / student / ASSIGNMENT
        dest.mkdir(parents=True)
        for nb in sorted((folder / ASSIGNMENT).glob("*.ipynb")):
            cells = json.loads((course / "source" / ASSIGNMENT / nb.name).read_text())["cells"]
            if any(c["metadata"].get("nbgrader", {}).get("grade") for c in cells):
                shutil.copy(nb, dest / nb.name)
    with open(base / "autograde.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "nbgrader", "autograde", ASSIGNMENT], cwd=course,
                                env=dict(os.environ, PYTHONPATH=str(root)), stdout=log, stderr=subprocess.STDOUT)
    try:
        yield course, root, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _row(stdout: str, capability: str) -> str:
    return next((ln for ln in stdout.splitlines() if ln.startswith(capability + " ")), "")


def graded_notebook(path: Path) -> bool:
    """True if the notebook has a test function module.yaml maps to a capability."""
    import yaml

    tests = yaml.safe_load((path.parent / "module.yaml").read_text()).get("notebook_tests", {})
    defined = re.findall(r"^def (test_\w+)\(", path.read_text(), re.M)
    return any(tests.get(name) for name in defined)


def notebooks(project) -> list[str]:
    """The module's notebooks (module.yaml ``notebooks``, else the main one), by file name."""
    import yaml

    meta = yaml.safe_load((project / MODULE_DIR / "module.yaml").read_text())
    return meta.get("notebooks") or [meta.get("notebook", "compression_dev.py")]


def test_student_path(project, autograde):  # autograde: nbgrader starts first and runs alongside
    names = notebooks(project)
    solutions = {name: (project / MODULE_DIR / name).read_bytes() for name in names}
    caps = capabilities(project)
    total = sum(caps.values())
    assert len(caps) >= 25 and total > 0

    start = tito(project, "module", "start", "18")
    assert start.returncode == 0, start.stderr
    for name in names:
        assert (project / WORKSPACE / name).is_file() and (project / WORKSPACE / name).with_suffix(".ipynb").is_file()
    assert "tito module complete 18" in start.stdout

    # the untouched notebooks: 0 points, every capability named, the failing line of the student's .py
    first = tito(project, "module", "complete", "18")
    out = first.stdout + first.stderr
    assert first.returncode == 1, out[-3000:]
    assert f"score: 0/{total:g}" in first.stdout, out[-3000:]
    for name, pts in caps.items():
        assert re.match(rf"{name} +0/{pts:g} +FAIL +\S", _row(first.stdout, name)), f"{name}:\n{out[-3000:]}"
    assert first.stdout.count("not started (still the handout), not run") == len(names)
    fix = re.search(rf"^fix first: {next(iter(caps))} .*\n  ({re.escape(WORKSPACE)}/\w+\.py):(\d+)", first.stdout, re.M)
    assert fix, out[-3000:]
    assert (project / fix.group(1)).read_text().split("\n")[int(fix.group(2)) - 1].strip() == \
        "raise NotImplementedError()"
    assert "TCP without encryption" not in out and "ipykernel" not in out
    assert {name: (project / MODULE_DIR / name).read_bytes() for name in names} == solutions

    # the student fills in every exercise of the graded notebooks (here: with the solution's code);
    # the going-further notebooks without points stay untouched, so complete does not run them
    graded = [name for name in names if graded_notebook(project / MODULE_DIR / name)]
    for name in graded:
        ws = project / WORKSPACE / name
        ws.write_text(fill_from_solution(solutions[name].decode(), ws.read_text()))
    done = tito(project, "module", "complete", "18")
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    assert done.stdout.count("notebook OK") == len(graded) and f"score: {total:g}/{total:g}" in done.stdout
    for name, pts in caps.items():
        assert re.match(rf"{name} +{pts:g}/{pts:g} +PASS$", _row(done.stdout, name)), name
    assert {name: (project / MODULE_DIR / name).read_bytes() for name in names} == solutions

    status = tito(project, "module", "status", "18")
    row = next(ln for ln in status.stdout.splitlines() if ln.startswith("18_compression"))
    assert f"{WORKSPACE}/{names[0]}" in row and "your notebook (in sync)" in row and f"{total:g}/{total:g}" in row


def test_wrong_implementations_fail_their_capability(project, tmp_path):
    solution = (project / NOTEBOOK).read_text()
    mutant = tmp_path / "compression_dev.py"
    for mistake, right, wrong, capability in WRONG_IMPLEMENTATIONS:
        mutant.write_text(mutate(solution, right, wrong))
        exported = tito(project, "export", "18", "--notebook", str(mutant))
        assert exported.returncode == 0, exported.stdout + exported.stderr
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              f"{CHECKPOINT}::{capability}"], cwd=project, env=dict(os.environ, PYTHONPATH=str(project)),
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 1 and "1 failed" in run.stdout, f"{mistake}: {capability} did not fail:\n{run.stdout}"
    assert (project / NOTEBOOK).read_text() == solution


def test_package_in_git_is_a_fresh_export(tmp_path):
    """What git holds (a student's export in the working tree does not count) is in sync."""
    scratch = _copy_tracked(tmp_path / "index", from_index=True)
    check = tito(scratch, "test", "18", "--check-export", "--solution")
    assert check.returncode == 0, "the package in git differs from exporting the notebook in git " \
                                  f"(run tito export 18):\n{check.stdout}{check.stderr}"


def _needs_nbgrader(autograde):
    if autograde is None:
        pytest.skip("nbgrader is not installed (pip install -e '.[instructor]')")
    return autograde


def test_nbgrader_accepts_the_course(autograde):
    course, root, _ = _needs_nbgrader(autograde)
    caps = capabilities(root)
    assert tito(root, "release", "18", "--out", "handout").returncode == 0
    points = 0
    for name in notebooks(root):
        stem = name[: -len("_dev.py")]
        source = json.loads((course / "source" / ASSIGNMENT / f"{stem}.ipynb").read_text())
        release = json.loads((course / "release" / ASSIGNMENT / f"{stem}.ipynb").read_text())
        meta = [c["metadata"].get("nbgrader", {}) for c in source["cells"]]
        for cell, m in zip(source["cells"], meta):
            text = "".join(cell["source"])
            if m.get("grade"):  # setup cells and analyses may assert, but only test cells are graded
                assert cell["cell_type"] == "code" and re.search(r"^def test_\w+\(", text, re.M), text[:300]
                assert BEGIN not in text and "#| export" not in text
            if cell["cell_type"] == "markdown":
                assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
        assert all(m["locked"] for m in meta if m and not m["solution"])
        points += sum(m.get("points", 0) for m in meta)
        # nbgrader's stubs are tito's: the student gets the same code from either path
        ours = json.loads((root / "handout" / name.replace(".py", ".ipynb")).read_text())
        code = [["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"] for nb in (release, ours)]
        assert code[0] == code[1], name
    assert points == sum(caps.values())  # grade cells are worth the checkpoint's points in total


def test_nbgrader_autograde_scores_solution_full_and_untouched_zero(autograde):
    course, root, proc = _needs_nbgrader(autograde)
    assert proc.wait(timeout=1800) == 0, (course.parent / "autograde.log").read_text()[-5000:]
    from nbgrader.api import Gradebook

    total = sum(capabilities(root).values())
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        solution = gradebook.find_submission(ASSIGNMENT, "solution")
        untouched = gradebook.find_submission(ASSIGNMENT, "untouched")
        failed = {g.name: (g.score, g.max_score) for nb in solution.notebooks for g in nb.grades
                  if g.score != g.max_score}
        assert solution.score == solution.max_score == total, f"solution lost points: {failed}"
        assert untouched.max_score == total
        scored = {g.name: g.score for nb in untouched.notebooks for g in nb.grades if g.score}
        assert untouched.score == 0, f"the untouched notebook scored: {scored}"
