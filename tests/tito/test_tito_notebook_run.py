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
    """The failure is shown as lines of the .py the student edits, not kernel internals."""
    assert tito("release", "99").returncode == 0
    shutil.copy(project / "student/99_demo/demo_dev.py", project / NB)
    lines = (project / NB).read_text().split("\n")
    test_line = lines.index("assert np.allclose(scale([1, 2], 3), [3, 6])") + 1
    stub_line = lines.index("    raise NotImplementedError()") + 1
    r = tito("test", "99", "--notebook-only")
    assert r.returncode == 1
    out = r.stdout
    assert f"notebook FAILED at {NB}:{test_line}\n" in out
    assert f"      {test_line} | assert np.allclose(scale([1, 2], 3), [3, 6])" in out
    assert f"  called {NB}:{stub_line} in scale\n      {stub_line} | raise NotImplementedError()" in out
    assert "NotImplementedError" in out.split(f"{NB}:{stub_line}")[1]
    for internal in ("\x1b[", "ipykernel", "Cell In[", "interactiveshell", "TCP without encryption"):
        assert internal not in out + r.stderr, internal


def test_pytest_only_without_tests_dir_fails(tito, project):
    shutil.rmtree(project / "tests/99_demo")
    r = tito("test", "99", "--pytest-only")
    assert r.returncode == 1
    assert "does not exist" in r.stdout
