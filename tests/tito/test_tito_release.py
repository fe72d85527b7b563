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


INLINE_TESTS = ('assert np.allclose(scale([1, 2], 3), [3, 6])\n'
                'assert np.allclose(Clipper(0, 1)([-1, 0.5, 2]), [0, 0.5, 1])\n')


def _inline_tests_as_functions(project):
    """Turn the fixture's assert cell into two notebook test functions (test cells)."""
    p = project / NB
    text = p.read_text()
    assert INLINE_TESTS in text
    p.write_text(text.replace(INLINE_TESTS, (
        "def test_scale():\n    assert np.allclose(scale([1, 2], 3), [3, 6])\n\n\n"
        "def test_clip():\n    assert np.allclose(Clipper(0, 1)([-1, 0.5, 2]), [0, 0.5, 1])\n\n\n"
        "test_scale()\ntest_clip()\n")))


def _nbgrader_meta(project):
    nb = json.loads((project / "student/99_demo/demo_dev.ipynb").read_text())
    return [(c["cell_type"], "".join(c["source"]), c["metadata"].get("nbgrader")) for c in nb["cells"]]


def test_release_nbgrader_metadata(tito, project):
    _inline_tests_as_functions(project)
    assert tito("release", "99").returncode == 0
    cells = _nbgrader_meta(project)
    solutions = [m for _, _, m in cells if m and m["solution"]]
    assert [m["grade_id"] for m in solutions] == ["scale", "Clipper"]
    for m in solutions:
        assert m == {"solution": True, "grade": False, "locked": False,
                     "grade_id": m["grade_id"], "schema_version": 3}
    tests = [m for _, _, m in cells if m and m["grade"]]
    assert tests == [{"solution": False, "grade": True, "locked": True, "points": 2,   # 1 per test function
                      "grade_id": "test_scale", "schema_version": 3}]
    # every other code cell is locked and never graded; markdown cells carry nothing
    for kind, src, m in cells:
        if kind == "markdown":
            assert m is None
        elif m is not tests[0] and not m["solution"]:
            assert m["locked"] and not m["grade"] and "points" not in m, src
    ids = [m["grade_id"] for _, _, m in cells if m]
    assert len(ids) == len(set(ids))
    assert "raise NotImplementedError()" in cells[3][1]


def test_an_assert_is_not_a_test_cell(tito, project):
    """The fixture's inline asserts are not in a test function: no grade cell, no free points."""
    assert tito("release", "99").returncode == 0
    cells = _nbgrader_meta(project)
    assert not any(m and m["grade"] for _, _, m in cells)
    assert any("assert np.allclose" in src and m["locked"] for _, src, m in cells if m)


def test_points_come_from_the_checkpoint(tito, project):
    """module.yaml maps notebook tests to capabilities; a test cell is worth their POINTS."""
    _inline_tests_as_functions(project)
    yml = project / "modules/99_demo/module.yaml"
    yml.write_text(yml.read_text() + "notebook_tests:\n  test_scale: [test_can_scale, test_can_clip]\n"
                                     "  test_clip: []\n")
    r = tito("release", "99")
    assert r.returncode == 0, r.stderr
    tests = [m for _, _, m in _nbgrader_meta(project) if m and m["grade"]]
    assert [(m["grade_id"], m["points"]) for m in tests] == [("test_scale", 5)]  # POINTS: 2 + 3

    yml.write_text(yml.read_text().replace("  test_clip: []\n", "  test_gone: [test_can_clip]\n")
                   .replace("[test_can_scale, test_can_clip]", "[test_can_scale, test_can_scale]"))
    r = tito("release", "99", "--force")
    assert r.returncode == 1
    for problem in ("notebook test test_clip is not in notebook_tests",
                    "notebook_tests names test_gone, which the notebook does not define",
                    "capability test_can_scale is listed 2 times"):
        assert problem in r.stderr, r.stderr
    yml.write_text(yml.read_text().replace("test_gone: [test_can_clip]", "test_clip: [test_can_fly]")
                   .replace("[test_can_scale, test_can_scale]", "[test_can_scale]"))
    r = tito("release", "99", "--force")
    assert "capability test_can_fly is not in tests/checkpoints/checkpoint_99_demo.py" in r.stderr
    assert "capability test_can_clip (3 points) is checked by no notebook test" in r.stderr


def test_jupyterlab_save_keeps_the_cell_headers(tito, project):
    """nbformat (JupyterLab's server) writes metadata keys sorted; the release writes them so too."""
    import jupytext
    import nbformat

    _inline_tests_as_functions(project)
    assert tito("release", "99").returncode == 0
    py = (project / STUDENT).read_text()
    saved = nbformat.reads(nbformat.writes(jupytext.read(project / "student/99_demo/demo_dev.ipynb")), 4)
    headers = [ln for ln in py.splitlines() if ln.startswith("# %%")]
    assert any("nbgrader=" in h for h in headers)
    assert [ln for ln in jupytext.writes(saved, fmt="py:percent").splitlines() if ln.startswith("# %%")] == headers


def test_prose_mentioning_a_marker_is_refused(tito, project):
    """nbgrader takes 'BEGIN SOLUTION' anywhere in a line for a marker, prose included."""
    p = project / NB
    text = p.read_text().replace("# > Scaling and clipping helpers.",
                                 "# > Scaling and clipping helpers.\n#\n# Fill the `### BEGIN SOLUTION` regions.")
    p.write_text(text)
    r = tito("release", "99")
    assert r.returncode == 1
    line = text.split("\n").index("# Fill the `### BEGIN SOLUTION` regions.") + 1
    assert f"modules/99_demo/demo_dev.py:{line}: this line mentions a solution marker" in r.stderr


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
