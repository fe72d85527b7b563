"""The grading loop of module 18, proven end to end on a copy of this repository:
student version -> every capability fails, naming the unimplemented function;
solution -> full marks; plausible wrong implementations -> the matching capability fails."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = "modules/18_compression/compression_dev.py"

# (what a student might get wrong, the solution line, the wrong line, the capability that must fail)
WRONG_IMPLEMENTATIONS = [
    ("KD loss without the T**2 factor",
     "return soft * (alpha * T * T) + hard * (1.0 - alpha)",
     "return soft * alpha + hard * (1.0 - alpha)",
     "test_kd_loss_value"),
    ("structured pruner that forgets the next layer's inputs",
     "_shrink(new_layers[name], keep_out.get(name), inputs, group)",
     "_shrink(new_layers[name], keep_out.get(name), None, group)",
     "test_structured_dependent_shapes"),
    ("CSR indptr shifted by one row",
     "minlength=rows)     # nonzeros per row (0 for empty rows)\n        indptr = np.concatenate([[0], np.cumsum(counts)])",
     "minlength=rows)\n        indptr = np.concatenate([[0, 0], np.cumsum(counts)[:-1]])",
     "test_csr_from_dense_canonical"),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the repository's tracked files (as they are in the working tree)."""
    root = tmp_path_factory.mktemp("grading") / "proj"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / rel, target)
    return root


def tito(project, *args):
    env = dict(os.environ, PYTHONPATH=str(project))  # the copy's tinytorch, not the repository's
    return subprocess.run([sys.executable, "-m", "tito", *args], cwd=project, env=env, capture_output=True,
                          text=True, timeout=600)


def export(project, source: str) -> None:
    (project / NOTEBOOK).write_text(source)
    result = tito(project, "export", "18_compression")
    assert result.returncode == 0, result.stdout + result.stderr


def test_grading_loop(project):
    solution = (project / NOTEBOOK).read_text()

    # 1. the student version imports cleanly and fails every capability, naming what is missing
    assert tito(project, "release", "18_compression", "--out", "student").returncode == 0
    export(project, (project / "student" / "compression_dev.py").read_text())
    imported = subprocess.run([sys.executable, "-c", "import tinytorch.optimization.compression"], cwd=project,
                              env=dict(os.environ, PYTHONPATH=str(project)), capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr
    graded = tito(project, "grade", "18_compression", "--json", "student.json")
    assert graded.returncode == 1, graded.stdout + graded.stderr
    report = json.loads((project / "student.json").read_text())
    capabilities = [t for t in report["tests"] if t["name"].startswith("checkpoint_18_compression::")]
    assert len(capabilities) >= 25 and report["score"] == 0 and report["max_score"] > 0
    for test in capabilities:
        assert "NotImplementedError" in test["output"], f"{test['name']} did not fail on the missing code"
        assert re.search(r"def \w+\(", test["output"]), f"{test['name']}: output does not name the function"

    # 2. the solution gets full marks
    export(project, solution)
    graded = tito(project, "grade", "18_compression", "--json", "solution.json")
    assert graded.returncode == 0, graded.stdout[-3000:]
    report = json.loads((project / "solution.json").read_text())
    assert report["score"] == report["max_score"] > 0

    # 3. each plausible mistake is caught by its capability
    for mistake, right, wrong, capability in WRONG_IMPLEMENTATIONS:
        assert solution.count(right) == 1, f"the notebook no longer contains {right!r}: update this test"
        export(project, solution.replace(right, wrong))
        run = tito(project, "checkpoint", "run", "18")
        assert run.returncode == 1, f"{mistake}: the checkpoint passed"
        row = next(line for line in run.stdout.splitlines() if line.startswith(capability + " "))
        assert "FAIL" in row, f"{mistake}: {capability} did not fail:\n{run.stdout}"
    export(project, solution)


def test_committed_package_matches_a_fresh_export(project):
    committed = (REPO_ROOT / "tinytorch/optimization/compression.py").read_bytes()
    scratch = project.parent / "fresh"
    shutil.copytree(project, scratch, ignore=shutil.ignore_patterns("student", "*.json", ".tito"))
    (scratch / NOTEBOOK).write_text((REPO_ROOT / NOTEBOOK).read_text())
    assert tito(scratch, "export", "18_compression").returncode == 0
    assert (scratch / "tinytorch/optimization/compression.py").read_bytes() == committed, \
        "tinytorch/optimization/compression.py differs from exporting the notebook: run tito export"
