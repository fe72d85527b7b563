"""tito test: executes the notebook in a real kernel (the slow tests), then pytest."""
import shutil

NB = "modules/99_demo/demo_dev.py"


def test_tito_test_passes_on_solution(tito, project):
    assert tito("export", "99").returncode == 0
    r = tito("test", "99")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "notebook OK" in r.stdout
    assert "2 passed" in r.stdout


def test_tito_test_reports_failing_cell(tito, project):
    assert tito("release", "99").returncode == 0
    shutil.copy(project / "student/99_demo/demo_dev.py", project / NB)
    r = tito("test", "99", "--notebook-only")
    assert r.returncode == 1
    assert "notebook FAILED in cell 5" in r.stdout
    assert "assert np.allclose(scale([1, 2], 3), [3, 6])" in r.stdout  # first source lines
    assert "NotImplementedError" in r.stdout.split("traceback (last lines):")[1]
    assert "\x1b[" not in r.stdout


def test_pytest_only_without_tests_dir_fails(tito, project):
    shutil.rmtree(project / "tests/99_demo")
    r = tito("test", "99", "--pytest-only")
    assert r.returncode == 1
    assert "does not exist" in r.stdout
