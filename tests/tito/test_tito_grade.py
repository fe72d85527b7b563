"""tito grade and tito checkpoint against the fixture's solution and student versions."""
import json
import re
import shutil

NB = "modules/99_demo/demo_dev.py"
CHECKPOINT = "tests/checkpoints/checkpoint_99_demo.py"
MODULE_TESTS = "tests/99_demo/test_demo.py"


def _row(stdout, capability):
    """The table row of ``capability`` split into (points, result, message)."""
    line = next(ln for ln in stdout.splitlines() if ln.startswith(capability + " "))
    m = re.match(rf"{capability} +(\S+) +(PASS|FAIL) *(.*)$", line)
    assert m, line
    return m.groups()


def test_grade_full_marks_with_json(tito, project):
    assert tito("export", "99").returncode == 0
    r = tito("grade", "99", "--json", "results.json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "score: 5/5" in r.stdout
    assert "module tests (not scored): 2/2 pass" in r.stdout
    assert _row(r.stdout, "test_can_scale") == ("2/2", "PASS", "")   # points from POINTS
    assert _row(r.stdout, "test_can_clip") == ("3/3", "PASS", "")
    assert "fix first" not in r.stdout
    res = json.loads((project / "results.json").read_text())
    assert set(res) == {"score", "max_score", "tests"}
    assert res["score"] == res["max_score"] == 5
    by_name = {t["name"]: t for t in res["tests"]}
    assert by_name["checkpoint_99_demo::test_can_scale"]["max_score"] == 2
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
    assert "score: 0/5" in r.stdout
    # the message names the unwritten function and its line in the notebook
    stub = (project / NB).read_text().split("\n").index("    raise NotImplementedError()") + 1
    assert _row(r.stdout, "test_can_scale") == ("0/2", "FAIL", f"scale is not written yet (demo_dev.py:{stub})")
    assert _row(r.stdout, "test_can_clip")[2].startswith("Clipper.__call__ is not written yet (demo_dev.py:")
    assert "module tests (not scored): 0/2 pass; failing: test_scale_zero, test_clip_inside_unchanged" in r.stdout
    assert f"fix first: test_can_scale (2 points)\n  {NB}:{stub} in scale\n" in r.stdout
    res = json.loads((project / "out/results.json").read_text())
    assert res["score"] == 0 and res["max_score"] == 5
    assert all("NotImplementedError" in t["output"] for t in res["tests"])


def test_grade_partial_credit(tito, project):
    p = project / NB
    p.write_text(p.read_text().replace("np.minimum(np.maximum(x, self.lo), self.hi)", "x"))
    assert tito("export", "99").returncode == 0
    r = tito("grade", "99")
    assert r.returncode == 1
    assert "score: 2/5" in r.stdout  # can_scale 2; can_clip 0 (module tests score nothing)
    assert _row(r.stdout, "test_can_scale")[:2] == ("2/2", "PASS")
    assert _row(r.stdout, "test_can_clip")[:2] == ("0/3", "FAIL")


def test_failing_module_test_never_contradicts_a_full_score(tito, project):
    """Module tests are not scored: full marks exit 0, and the one line says which failed."""
    t = project / MODULE_TESTS
    t.write_text(t.read_text() + "\n\ndef test_scale_negative_factor_flips_sign():\n"
                                 "    assert scale([2.0], -1)[0] == 2.0\n")
    assert tito("export", "99").returncode == 0
    r = tito("grade", "99")
    assert r.returncode == 0, r.stdout
    assert "score: 5/5" in r.stdout
    assert ("module tests (not scored): 2/3 pass; failing: test_scale_negative_factor_flips_sign "
            "(tito test 99 shows why)") in r.stdout


def test_messages_are_cut_at_a_word_boundary(tito, project):
    words = "the clipped values must stay inside the closed interval from lo to hi for every element " * 3
    c = project / CHECKPOINT
    c.write_text(c.read_text().replace("assert np.allclose(Clipper(-1, 1)([-5, 0, 5]), [-1, 0, 1])",
                                       f"assert np.allclose(Clipper(-1, 1)([-5, 0, 5]), [-1, 0, 1]), {words!r}"))
    p = project / NB
    p.write_text(p.read_text().replace("np.minimum(np.maximum(x, self.lo), self.hi)", "x"))
    assert tito("export", "99").returncode == 0
    r = tito("grade", "99")
    row = next(ln for ln in r.stdout.splitlines() if ln.startswith("test_can_clip "))
    message = _row(r.stdout, "test_can_clip")[2]
    assert len(row) <= 100 and message.endswith("…")
    shown = message[:-1]
    assert words.startswith(shown) and words[len(shown)] == " "  # whole words only


def test_grade_refuses_a_package_that_was_never_exported(tito, project):
    r = tito("grade", "99")
    assert r.returncode == 1
    assert "tinytorch/optimization/demo.py is missing" in r.stderr
    assert "Run `tito export 99` first" in r.stderr


def test_grade_when_the_checkpoint_cannot_import(tito, project):
    """Every capability is still named, not run, worth its points."""
    c = project / CHECKPOINT
    c.write_text(c.read_text().replace("from tinytorch.optimization.demo import Clipper, scale",
                                       "from tinytorch.optimization.demo import Clipper, scale, clip_all"))
    assert tito("export", "99").returncode == 0
    r = tito("grade", "99")
    assert r.returncode == 1
    assert "score: 0/5" in r.stdout
    for cap, pts in (("test_can_scale", "0/2"), ("test_can_clip", "0/3")):
        points, result, message = _row(r.stdout, cap)
        assert (points, result) == (pts, "FAIL") and message.startswith("not run: collection failure")
        assert "clip_all" in message or message.endswith("…")


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


def test_bonus_checkpoint_is_reported_apart_and_never_changes_the_score(tito, project):
    # a going-further checkpoint: checkpoint_<module>_<part>.py, with its own POINTS
    (project / "tests/checkpoints/checkpoint_99_demo_further.py").write_text(
        "from tinytorch.optimization.demo import Clipper, scale\n\n"
        "POINTS = {'test_scale_twice': 4, 'test_clip_wide': 1}\n\n\n"
        "def test_scale_twice():\n    assert list(scale(scale([1.0], 2), 2)) == [4.0]\n\n\n"
        "def test_clip_wide():\n    assert list(Clipper(0, 1)([7])) == [0]   # wrong on purpose: 7 clips to 1\n")
    assert tito("export", "99").returncode == 0
    r = tito("grade", "99", "--json", "results.json")
    assert r.returncode == 0, r.stdout + r.stderr            # full core marks: the bonus cannot fail it
    assert "score: 5/5" in r.stdout
    assert "bonus checkpoint_99_demo_further: 4/5 (not in the score); first to fix: test_clip_wide (1 failing)" \
        in r.stdout
    res = json.loads((project / "results.json").read_text())
    assert res["score"] == res["max_score"] == 5
    by_name = {t["name"]: t for t in res["tests"]}
    assert by_name["checkpoint_99_demo_further::test_scale_twice"] == {
        "name": "checkpoint_99_demo_further::test_scale_twice", "score": 4, "max_score": 0, "output": ""}
    assert by_name["checkpoint_99_demo_further::test_clip_wide"]["score"] == 0
