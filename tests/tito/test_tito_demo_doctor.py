"""tito demo and tito doctor."""


def test_demo_runs_script(tito, project):
    assert tito("export", "99").returncode == 0
    r = tito("demo", "99", "extra-arg")
    assert r.returncode == 0, r.stderr
    assert "demo:" in r.stdout and "extra-arg" in r.stdout


def test_demo_missing_script(tito, project):
    (project / "scripts/demo_99.py").unlink()
    r = tito("demo", "99")
    assert r.returncode == 1
    assert "demo script 'scripts/demo_99.py' not found" in r.stderr


def test_demo_failing_script(tito, project):
    r = tito("demo", "99")  # not exported yet: the import fails
    assert r.returncode == 1
    assert "demo exited with status" in r.stderr


def test_doctor(tito, project):
    r = tito("doctor")
    assert r.returncode == 1  # nothing exported yet
    assert "OUT OF SYNC" in r.stdout
    assert tito("export", "99").returncode == 0
    r = tito("doctor")
    assert r.returncode == 0, r.stdout
    for word in ("python", "numpy", "jupytext", "nbdev", "import tinytorch: ok", "in sync"):
        assert word in r.stdout
    # the student's and the instructor's extras are reported, installed or not
    from importlib import metadata
    for dist, extra in (("jupyterlab", "student"), ("nbgrader", "instructor")):
        line = next(ln for ln in r.stdout.splitlines() if ln.startswith(f"{dist} "))
        try:
            assert metadata.version(dist) in line
        except metadata.PackageNotFoundError:
            assert f'.[{extra}]' in line, line
