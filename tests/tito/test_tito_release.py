"""tito release: solution stripping, nbgrader metadata, overwrite protection."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from tito.errors import TitoError
from tito.release import check_markers, strip_solutions

NB = "modules/99_demo/demo_dev.py"
STUDENT = "student/99_demo/demo_dev.py"


def test_strip_solutions_keeps_begin_indentation():
    src = "def f():\n    x = 1\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n\ny = 2"
    out, n = strip_solutions(src)
    assert n == 1
    assert out == "def f():\n    x = 1\n    # YOUR CODE HERE\n    raise NotImplementedError()\n\ny = 2"


@pytest.mark.parametrize("lines, bad_line", [
    (["### BEGIN SOLUTION", "x", "### BEGIN SOLUTION", "### END SOLUTION"], 3),
    (["x", "### END SOLUTION"], 2),
    (["a", "  ### BEGIN SOLUTION", "x"], 2),
])
def test_check_markers_names_the_line(lines, bad_line):
    with pytest.raises(TitoError, match=f"line {bad_line}:"):
        check_markers(lines, lambda i: f"line {i + 1}")


def test_release_replaces_solutions(tito, project):
    r = tito("release", "99_demo")
    assert r.returncode == 0, r.stderr
    text = (project / STUDENT).read_text()
    assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
    assert "np.minimum" not in text and "* factor" not in text
    assert "    # YOUR CODE HERE\n    raise NotImplementedError()\n" in text          # in scale()
    assert "        # YOUR CODE HERE\n        raise NotImplementedError()\n" in text  # in Clipper.__call__
    assert "self.lo, self.hi = lo, hi" in text  # code outside regions is kept
    assert (project / NB).read_text().count("BEGIN SOLUTION") == 2  # source untouched


def test_release_nbgrader_metadata(tito, project):
    assert tito("release", "99").returncode == 0
    nb = json.loads((project / "student/99_demo/demo_dev.ipynb").read_text())
    meta = [c["metadata"].get("nbgrader") for c in nb["cells"]]
    solutions = [m for m in meta if m and m["solution"]]
    assert [m["grade_id"] for m in solutions] == ["scale", "Clipper"]
    for m in solutions:
        assert m == {"solution": True, "grade": False, "locked": False,
                     "grade_id": m["grade_id"], "schema_version": 3}
    tests = [m for m in meta if m and m["grade"]]
    assert len(tests) == 1 and tests[0]["locked"] and tests[0]["points"] == 1
    ids = [m["grade_id"] for m in meta if m]
    assert len(ids) == len(set(ids))
    src = "".join(nb["cells"][3]["source"])
    assert "raise NotImplementedError()" in src


def test_released_module_exports_and_raises(tito, project):
    assert tito("release", "99").returncode == 0
    shutil.copy(project / STUDENT, project / NB)
    r = tito("export", "99")
    assert r.returncode == 0, r.stderr
    code = (
        "from tinytorch.optimization.demo import scale, Clipper\n"
        "c = Clipper(0, 1)\n"
        "for f in (lambda: scale([1], 2), lambda: c([3])):\n"
        "    try:\n        f()\n    except NotImplementedError:\n        print('NIE')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(project)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["NIE", "NIE"]


def test_unbalanced_markers_fail(tito, project):
    p = project / NB
    p.write_text(p.read_text().replace("        ### END SOLUTION\n", "", 1))
    r = tito("release", "99")
    assert r.returncode == 1
    assert "demo_dev.py:" in r.stderr and "never closed" in r.stderr
    assert not (project / STUDENT).exists()


def test_markers_split_across_cells_fail(tito, project):
    p = project / NB
    text = p.read_text().replace("    ### END SOLUTION\n\n# %%\n#| export\nclass Clipper", "\n# %%\n#| export\nclass Clipper", 1)
    text = text.replace("    def __call__(self, x):\n        ### BEGIN SOLUTION", "    def __call__(self, x):\n        ### END SOLUTION\n        ### BEGIN SOLUTION", 1)
    p.write_text(text)
    r = tito("release", "99")
    assert r.returncode == 1, r.stdout
    assert "never closed" in r.stderr or "without a matching" in r.stderr


def test_release_refuses_overwrite_without_force(tito, project):
    assert tito("release", "99").returncode == 0
    (project / STUDENT).write_text("# student work\n")
    r = tito("release", "99")
    assert r.returncode == 1
    assert "--force" in r.stderr
    assert (project / STUDENT).read_text() == "# student work\n"
    r = tito("release", "99", "--force")
    assert r.returncode == 0, r.stderr
    assert "raise NotImplementedError()" in (project / STUDENT).read_text()


def test_release_out_dir(tito, project, tmp_path):
    out = tmp_path / "handout"
    r = tito("release", "99", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert (out / "demo_dev.py").is_file() and (out / "demo_dev.ipynb").is_file()
    assert not (project / "student").exists()
