"""tito grade and tito checkpoint against the fixture's solution and student versions."""
import json
import shutil

NB = "modules/99_demo/demo_dev.py"


def test_grade_full_marks_with_json(tito, project):
    assert tito("export", "99").returncode == 0
    r = tito("grade", "99", "--json", "results.json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "total: 5/5" in r.stdout
    assert "module tests (0 points): 2/2 passed" in r.stdout
    res = json.loads((project / "results.json").read_text())
    assert set(res) == {"score", "max_score", "tests"}
    assert res["score"] == res["max_score"] == 5
    by_name = {t["name"]: t for t in res["tests"]}
    assert by_name["checkpoint_99_demo::test_can_scale"]["max_score"] == 2   # from POINTS
    assert by_name["checkpoint_99_demo::test_can_clip"]["max_score"] == 3
    assert by_name["test_demo::test_scale_zero"]["max_score"] == 0           # module tests score nothing
    for t in res["tests"]:
        assert set(t) == {"name", "score", "max_score", "output"}


def test_grade_student_version_fails(tito, project):
    assert tito("release", "99").returncode == 0
    shutil.copy(project / "student/99_demo/demo_dev.py", project / NB)
    assert tito("export", "99").returncode == 0
    r = tito("grade", "99", "--json", "out/results.json")
    assert r.returncode == 1
    assert "NotImplementedError" in r.stdout
    assert "total: 0/5" in r.stdout
    res = json.loads((project / "out/results.json").read_text())
    assert res["score"] == 0 and res["max_score"] == 5
    assert all("NotImplementedError" in t["output"] for t in res["tests"])


def test_grade_partial_credit(tito, project):
    p = project / NB
    p.write_text(p.read_text().replace("np.minimum(np.maximum(x, self.lo), self.hi)", "x"))
    assert tito("export", "99").returncode == 0
    r = tito("grade", "99")
    assert r.returncode == 1
    assert "total: 2/5" in r.stdout  # can_scale 2; can_clip 0 (module tests score nothing)


def test_grade_without_package_module(tito, project):
    r = tito("grade", "99")  # never exported: test files cannot import
    assert r.returncode == 1
    assert "total: 0/5" in r.stdout  # the 5 POINTS of the checkpoint, all lost
    assert "ModuleNotFoundError" in r.stdout


def test_checkpoint_run_and_status(tito, project):
    r = tito("checkpoint", "status")
    assert r.returncode == 0 and "never run" in r.stdout
    assert tito("export", "99").returncode == 0
    r = tito("checkpoint", "run", "99")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "test_can_scale | PASS" in r.stdout
    state = json.loads((project / ".tito/checkpoints.json").read_text())
    assert state["99_demo"]["passed"] == 2 and state["99_demo"]["total"] == 2
    r = tito("checkpoint", "status")
    assert "99_demo: 2/2 pass (run " in r.stdout
    assert state["99_demo"]["timestamp"] in r.stdout


def test_checkpoint_failure_table(tito, project):
    assert tito("release", "99").returncode == 0
    shutil.copy(project / "student/99_demo/demo_dev.py", project / NB)
    assert tito("export", "99").returncode == 0
    r = tito("checkpoint", "run", "demo")
    assert r.returncode == 1
    assert "test_can_clip  | FAIL   | NotImplementedError" in r.stdout
    r = tito("checkpoint", "status", "99")
    assert "0/2 pass" in r.stdout
