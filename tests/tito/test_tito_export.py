"""tito export / tito notebook / tito test --check-export."""
import json
import os
import subprocess
import sys

NB = "modules/99_demo/demo_dev.py"
OUT = "tinytorch/optimization/demo.py"


def _edit(project, old, new):
    p = project / NB
    text = p.read_text()
    assert old in text
    p.write_text(text.replace(old, new, 1))


def test_export_writes_module_with_source_header(tito, project):
    r = tito("export", "99_demo")
    assert r.returncode == 0, r.stderr
    assert "['scale', 'Clipper']" in r.stdout
    text = (project / OUT).read_text()
    assert "File to edit: ../../modules/99_demo/demo_dev.py" in text
    assert "/tmp" not in text and "ipynb" not in text
    assert text.startswith('"""Scaling and clipping helpers."""')
    assert "__all__ = ['scale', 'Clipper']" in text
    assert "#| export" not in text


def test_export_is_deterministic(tito, project):
    assert tito("export", "99").returncode == 0
    first = (project / OUT).read_bytes()
    (project / OUT).unlink()
    assert tito("export", "99").returncode == 0
    assert (project / OUT).read_bytes() == first
    r = tito("export", "99")
    assert "unchanged" in r.stdout
    assert (project / OUT).read_bytes() == first


def test_exported_module_imports_and_works(tito, project):
    assert tito("export", "99").returncode == 0
    code = "from tinytorch.optimization.demo import scale, Clipper; print(list(scale([1, 2], 3)), list(Clipper(0, 1)([5])))"
    r = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(project)})
    assert r.returncode == 0, r.stderr
    assert "3.0" in r.stdout and "6.0" in r.stdout and "1.0" in r.stdout


def test_syntax_error_fails_and_keeps_previous_file(tito, project):
    assert tito("export", "99").returncode == 0
    before = (project / OUT).read_bytes()
    _edit(project, "return np.asarray(x, dtype=float) * factor", "return np.asarray(x, dtype=float) * (factor")
    r = tito("export", "99")
    assert r.returncode == 1
    assert "cell 3, line 5" in r.stderr
    assert "demo_dev.py:30" in r.stderr
    assert (project / OUT).read_bytes() == before
    leftovers = [p.name for p in (project / OUT).parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_syntax_error_on_first_export_creates_nothing(tito, project):
    _edit(project, "def scale(x, factor):", "def scale(x, factor)")
    r = tito("export", "99")
    assert r.returncode == 1 and "syntax error" in r.stderr
    assert not (project / OUT).exists()


def test_missing_default_exp_fails(tito, project):
    _edit(project, "#| default_exp optimization.demo", "DEFAULT = 1")
    r = tito("export", "99")
    assert r.returncode == 1
    assert "default_exp" in r.stderr
    assert not (project / OUT).exists()


def test_no_export_cells_fails(tito, project):
    p = project / NB
    p.write_text(p.read_text().replace("#| export\n", ""))
    r = tito("export", "99")
    assert r.returncode == 1
    assert "no '#| export'" in r.stderr
    assert not (project / OUT).exists()


def test_export_leaves_pyproject_alone(tito, project):
    before = (project / "pyproject.toml").read_bytes()
    assert tito("export", "99").returncode == 0
    assert (project / "pyproject.toml").read_bytes() == before
    assert not (project / "settings.ini").exists()


def test_check_export_detects_drift(tito, project):
    r = tito("test", "99", "--check-export")
    assert r.returncode == 1 and "missing" in r.stdout
    assert tito("export", "99").returncode == 0
    r = tito("test", "99", "--check-export")
    assert r.returncode == 0, r.stdout + r.stderr
    _edit(project, "* factor", "* factor * 1")
    r = tito("test", "99", "--check-export")
    assert r.returncode == 1
    assert "package drifted from notebook; run tito export" in r.stdout


def test_notebook_command_writes_ipynb(tito, project):
    r = tito("notebook", "99")
    assert r.returncode == 0, r.stderr
    dest = project / "modules/99_demo/demo_dev.ipynb"
    nb = json.loads(dest.read_text())
    first = dest.read_bytes()
    assert nb["nbformat"] == 4 and len(nb["cells"]) == 6
    assert any("def scale" in "".join(c["source"]) for c in nb["cells"])
    assert tito("notebook", "99").returncode == 0
    assert dest.read_bytes() == first  # stable cell ids


def test_settings_ini_above_project_is_ignored(tito, project):
    (project.parent / "settings.ini").write_text("[DEFAULT]\nlib_name = other\n")
    r = tito("export", "99")
    assert r.returncode == 0, r.stderr
    assert (project / OUT).stat().st_size > 0


def test_export_creates_missing_package_inits(tito, project):
    (project / "tinytorch/optimization/__init__.py").unlink()
    r = tito("export", "99")
    assert r.returncode == 0, r.stderr
    assert "created tinytorch/optimization/__init__.py" in r.stdout
    assert (project / "tinytorch/optimization/__init__.py").read_text() == ""
