"""The student workspace on the fixture module: tito module start / complete / status / reset,
and tito export / grade / test choosing the workspace notebook and refusing stale exports."""
import json
import os
import re
import time

SOLUTION = "modules/99_demo/demo_dev.py"
WS = "workspace/99_demo/demo_dev.py"
WS_IPYNB = "workspace/99_demo/demo_dev.ipynb"
# the two stubs of the fixture, filled as a student would
ANSWERS = [("    # YOUR CODE HERE\n    raise NotImplementedError()\n",
            "    return np.asarray(x, dtype=float) * factor\n"),
           ("        # YOUR CODE HERE\n        raise NotImplementedError()\n",
            "        return np.clip(np.asarray(x, dtype=float), self.lo, self.hi)\n")]


def _fill(project, answers=ANSWERS):
    p = project / WS
    text = p.read_text()
    for stub, code in answers:
        assert text.count(stub) == 1
        text = text.replace(stub, code)
    p.write_text(text)


def _touch_later(path):
    """Give ``path`` an mtime clearly after everything written so far."""
    later = time.time() + 5
    os.utime(path, (later, later))


def test_start_writes_the_student_pair_and_refuses_to_overwrite(tito, project):
    solution = (project / SOLUTION).read_bytes()
    r = tito("module", "start", "99")
    assert r.returncode == 0, r.stderr
    py, ipynb = project / WS, project / WS_IPYNB
    text = py.read_text()
    assert "raise NotImplementedError()" in text and "np.minimum" not in text and "BEGIN SOLUTION" not in text
    assert "formats: ipynb,py:percent" in text  # a jupytext pair JupyterLab keeps in step
    assert json.loads(ipynb.read_text())["metadata"]["jupytext"]["formats"] == "ipynb,py:percent"
    assert py.stat().st_mtime >= ipynb.stat().st_mtime  # jupytext refuses a pair whose .ipynb is newer
    assert f"jupyter lab {WS_IPYNB}" in r.stdout
    assert "demo_dev.py:33" in r.stdout and "scale" in r.stdout  # where the first exercise is
    assert "tito module complete 99" in r.stdout

    py.write_text(text + "\n# my work\n")
    r = tito("module", "start", "99")
    assert r.returncode == 1
    assert "already hold your work" in r.stderr and "tito module reset 99" in r.stderr
    assert py.read_text().endswith("# my work\n")
    assert (project / SOLUTION).read_bytes() == solution


def test_reset_backs_up_then_restores_a_fresh_copy(tito, project):
    assert tito("module", "start", "99").returncode == 0
    fresh = (project / WS).read_text()
    _fill(project)
    work = (project / WS).read_text()
    r = tito("module", "reset", "99")
    assert r.returncode == 0, r.stderr
    backups = sorted((project / "workspace/99_demo").glob("backup-*"))
    assert len(backups) == 1 and re.fullmatch(r"backup-\d{8}-\d{6}", backups[0].name)
    assert (backups[0] / "demo_dev.py").read_text() == work
    assert (backups[0] / "demo_dev.ipynb").is_file()
    assert f"backed up your work to workspace/99_demo/{backups[0].name}/" in r.stdout
    assert (project / WS).read_text() == fresh
    assert tito("module", "reset", "99").returncode == 0  # a second reset in the same second
    assert len(list((project / "workspace/99_demo").glob("backup-*"))) == 2


def test_commands_use_the_workspace_and_refuse_stale_exports(tito, project):
    solution = (project / SOLUTION).read_bytes()
    assert tito("module", "start", "99").returncode == 0

    r = tito("grade", "99")  # never exported
    assert r.returncode == 1
    assert f"not an export of {WS}" in r.stderr and "Run `tito export 99` first" in r.stderr

    r = tito("export", "99")
    assert r.returncode == 0, r.stderr
    assert f"notebook: {WS} (your workspace" in r.stdout
    assert "File to edit: ../../workspace/99_demo/demo_dev.py" in (project / "tinytorch/optimization/demo.py").read_text()
    r = tito("grade", "99")
    assert r.returncode == 1 and "score: 0/5" in r.stdout

    _fill(project)  # changed after the export: grading that package would be stale
    for args in (["grade", "99"], ["checkpoint", "run", "99"], ["test", "99", "--pytest-only"]):
        r = tito(*args)
        assert r.returncode == 1, args
        assert "Run `tito export 99` first" in r.stderr, args
    assert tito("export", "99").returncode == 0
    r = tito("grade", "99")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "score: 5/5" in r.stdout

    # the instructor's notebook on request; the package then no longer matches the workspace
    r = tito("grade", "99", "--solution")
    assert r.returncode == 1 and "Run `tito export 99 --solution` first" in r.stderr
    r = tito("export", "99", "--solution")
    assert r.returncode == 0 and f"notebook: {SOLUTION} (the instructor's solution)" in r.stdout
    assert tito("grade", "99", "--solution").returncode == 0
    assert (project / SOLUTION).read_bytes() == solution


def test_notebook_option(tito, project, tmp_path):
    other = tmp_path / "mine_dev.py"
    other.write_text((project / SOLUTION).read_text().replace("* factor", "* factor * 2"))
    r = tito("export", "99", "--notebook", str(other))
    assert r.returncode == 0, r.stderr
    assert "(given with --notebook)" in r.stdout
    r = tito("grade", "99", "--notebook", str(other))
    assert r.returncode == 1
    assert re.search(r"^test_can_scale +0/2 +FAIL", r.stdout, re.M)
    assert re.search(r"^test_can_clip +3/3 +PASS", r.stdout, re.M)
    r = tito("grade", "99", "--notebook", str(tmp_path / "missing.py"))
    assert r.returncode == 2 and "no such file" in r.stderr


def test_a_later_ipynb_save_updates_the_py(tito, project):
    """JupyterLab without jupytext saves only the .ipynb: tito takes the newer file."""
    assert tito("module", "start", "99").returncode == 0
    ipynb = project / WS_IPYNB
    nb = json.loads(ipynb.read_text())
    for cell in nb["cells"]:
        src = "".join(cell["source"])
        if "def scale" in src:
            cell["source"] = src.replace("    # YOUR CODE HERE\n    raise NotImplementedError()",
                                         "    return np.asarray(x, dtype=float) * factor")
    ipynb.write_text(json.dumps(nb))
    _touch_later(ipynb)
    r = tito("export", "99")
    assert r.returncode == 0, r.stderr
    assert f"updated {WS} from demo_dev.ipynb" in r.stdout
    assert "return np.asarray(x, dtype=float) * factor" in (project / WS).read_text()
    r = tito("grade", "99")
    assert re.search(r"^test_can_scale +2/2 +PASS", r.stdout, re.M), r.stdout


def test_complete_scores_and_points_at_the_students_line(tito, project):
    solution = (project / SOLUTION).read_bytes()
    r = tito("module", "complete", "99")
    assert r.returncode == 1 and "tito module start 99" in r.stderr

    assert tito("module", "start", "99").returncode == 0
    r = tito("module", "complete", "99")
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert f"exported {WS} -> tinytorch/optimization/demo.py" in out
    assert f"{WS}: not started (still the handout), not run" in out
    # every capability fails; the message and "fix first" give the stub's line of the .py
    stub_line = (project / WS).read_text().split("\n").index("    raise NotImplementedError()") + 1
    assert re.search(r"^test_can_scale +0/2 +FAIL +scale is not written yet \(demo_dev\.py:%d\)" % stub_line, out, re.M)
    assert re.search(r"^test_can_clip +0/3 +FAIL +Clipper\.__call__ is not written yet", out, re.M)
    assert "score: 0/5" in out
    assert f"fix first: test_can_scale (2 points)\n  {WS}:{stub_line} in scale\n" in out

    _fill(project, ANSWERS[:1])  # scale written: the notebook runs and stops in Clipper.__call__
    r = tito("module", "complete", "99")
    out = r.stdout + r.stderr
    assert r.returncode == 1
    lines = (project / WS).read_text().split("\n")
    test_line = lines.index("assert np.allclose(Clipper(0, 1)([-1, 0.5, 2]), [0, 0.5, 1])") + 1
    stub_line = lines.index("        raise NotImplementedError()") + 1
    assert f"notebook FAILED at {WS}:{test_line}\n" in out
    assert f"  called {WS}:{stub_line} in Clipper.__call__\n      {stub_line} | raise NotImplementedError()" in out
    assert "score: 2/5" in out
    assert f"fix first: the notebook stops at {WS}:{stub_line} in Clipper.__call__" in out
    assert "ipykernel" not in out and "Cell In[" not in out and "TCP without encryption" not in out

    _fill(project, ANSWERS[1:])
    r = tito("module", "complete", "99")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "notebook OK" in r.stdout and "score: 5/5" in r.stdout and "full marks" in r.stdout
    assert (project / SOLUTION).read_bytes() == solution

    r = tito("module", "status")
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if line.startswith("99_demo"))
    assert WS in row and "your notebook (in sync)" in row and "5/5" in row
    _fill(project, [("* factor", "* factor  # mine")])
    row = next(line for line in tito("module", "status", "99").stdout.splitlines() if line.startswith("99_demo"))
    assert "out of date: tito export 99" in row and "notebook changed since" in row


def test_status_before_start(tito, project):
    r = tito("module", "status")
    assert r.returncode == 0
    row = next(line for line in r.stdout.splitlines() if line.startswith("99_demo"))
    assert "no (tito module start 99)" in row and "never graded" in row
    assert tito("export", "99").returncode == 0
    row = next(line for line in tito("module", "status").stdout.splitlines() if line.startswith("99_demo"))
    assert "the instructor's solution" in row


def test_a_module_with_two_notebooks(tito, project):
    """Every notebook of the module goes into the workspace and is exported, run and graded."""
    import shutil

    shutil.copytree(project / "extra_modules/98_multi", project / "modules/98_multi")
    yml = project / "modules/98_multi/module.yaml"
    yml.write_text(yml.read_text() + "notebooks: [multi_dev.py, multi_more_dev.py]\n")
    more = project / "modules/98_multi/multi_more_dev.py"
    body = "    return np.asarray(x, dtype=float) / max_abs(x)\n"
    more.write_text(more.read_text().replace(body, f"    ### BEGIN SOLUTION\n{body}    ### END SOLUTION\n"))
    (project / "tests/checkpoints/checkpoint_98_multi.py").write_text(
        "import numpy as np\n\nfrom tinytorch.optimization.multi.robust import unit_max\n\n"
        "POINTS = {'test_unit_max': 4}\n\n\n"
        "def test_unit_max():\n    assert np.allclose(unit_max([2.0, -8.0]), [0.25, -1.0])\n")
    solutions = {p: p.read_bytes() for p in (project / "modules/98_multi").glob("*_dev.py")}

    r = tito("module", "start", "98")
    assert r.returncode == 0, r.stderr
    ws = project / "workspace/98_multi"
    assert sorted(p.name for p in ws.iterdir()) == ["multi_dev.ipynb", "multi_dev.py",
                                                    "multi_more_dev.ipynb", "multi_more_dev.py"]
    assert "then the other notebooks: multi_more_dev.ipynb" in r.stdout

    # a notebook the workspace lacks (e.g. added to the module later) is added, the rest kept
    (ws / "multi_dev.py").write_text((ws / "multi_dev.py").read_text() + "\n# my notes\n")
    for p in ("multi_more_dev.py", "multi_more_dev.ipynb"):
        (ws / p).unlink()
    r = tito("export", "98")
    assert r.returncode == 1 and "workspace/98_multi/multi_more_dev.py missing from your workspace" in r.stderr
    assert "`tito module start 98` adds it" in r.stderr
    r = tito("module", "start", "98")
    assert r.returncode == 0 and "added to your workspace: workspace/98_multi/multi_more_dev.ipynb" in r.stdout
    assert (ws / "multi_dev.py").read_text().endswith("# my notes\n") and (ws / "multi_more_dev.py").is_file()
    (ws / "multi_dev.py").write_text((ws / "multi_dev.py").read_text()[: -len("\n# my notes\n")])

    r = tito("module", "complete", "98")
    assert r.returncode == 1
    stub = (ws / "multi_more_dev.py").read_text().split("\n").index("    raise NotImplementedError()") + 1
    assert r.stdout.count("not started (still the handout), not run") == 2
    assert f"fix first: test_unit_max (4 points)\n  workspace/98_multi/multi_more_dev.py:{stub} in unit_max" in r.stdout
    assert re.search(r"^test_unit_max +0/4 +FAIL +unit_max is not written yet \(multi_more_dev\.py:%d\)" % stub,
                     r.stdout, re.M), r.stdout
    assert "File to edit: ../../../workspace/98_multi/multi_more_dev.py" in \
        (project / "tinytorch/optimization/multi/robust.py").read_text()

    p = ws / "multi_more_dev.py"
    p.write_text(p.read_text().replace("    # YOUR CODE HERE\n    raise NotImplementedError()\n", body))
    r = tito("module", "complete", "98")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "workspace/98_multi/multi_dev.py: not started" in r.stdout  # nothing to write in it
    assert r.stdout.count("notebook OK") == 1 and "score: 4/4" in r.stdout
    assert {p: p.read_bytes() for p in (project / "modules/98_multi").glob("*_dev.py")} == solutions
