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
    assert r.stdout.splitlines()[-1] == (
        "exported modules/99_demo/demo_dev.py -> tinytorch/optimization/demo.py (1 module, 2 names; written)")
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


# ---------------------------------------------------------------------------------------------
# One notebook, several target modules (fixture: extra_modules/98_multi, copied into modules/).
# Run in-process (tito.export API) to keep the tests fast; imports run in a subprocess.

import ast  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

MULTI_NB = "modules/98_multi/multi_dev.py"
PKG = "tinytorch/optimization/multi"
# What the notebook exports, by hand: module -> its __all__ (notebook order).
EXPECTED_ALL = {"stats": ["mean_abs", "max_abs"], "scaling": ["normalize"], "clip": ["Clipper"]}


@pytest.fixture
def multi(project):
    """The fixture project with the multi-target notebook installed as module 98."""
    shutil.copytree(project / "extra_modules/98_multi", project / "modules/98_multi")
    return project


def _module(root, spec="98"):
    from tito.project import Project

    return Project.find(root).module(spec)


def _export(root, capsys, notebook=None):
    """``tito export 98`` in-process: (exit code, stdout, error message or "")."""
    from tito.errors import TitoError
    from tito.export import export_command

    try:
        code, err = export_command(_module(root), notebook), ""
    except TitoError as e:
        code, err = 1, str(e)
    return code, capsys.readouterr().out, err


def _tree(root):
    """Every file under the package (and temp files anywhere in it): {relative path: bytes}."""
    lib = root / "tinytorch"
    return {p.relative_to(lib).as_posix(): p.read_bytes() for p in sorted(lib.rglob("*")) if p.is_file()}


def _all_of(path):
    tree = ast.parse(path.read_text())
    return next(ast.literal_eval(n.value) for n in tree.body
                if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "__all__")


def _python(root, code):
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"})
    assert r.returncode == 0, r.stderr
    return r.stdout


def _edit_multi(root, old, new):
    p = root / MULTI_NB
    text = p.read_text()
    assert text.count(old) == 1, old
    p.write_text(text.replace(old, new))


def test_multi_export_writes_every_module_and_init(multi, capsys):
    code, out, err = _export(multi, capsys)
    assert code == 0, err
    assert out.splitlines()[-1] == (
        "exported modules/98_multi/multi_dev.py -> tinytorch/optimization/multi/ (3 modules, 4 names; written)")
    pkg = multi / PKG
    assert sorted(p.name for p in pkg.iterdir()) == ["__init__.py", "clip.py", "scaling.py", "stats.py"]
    for name, names in EXPECTED_ALL.items():
        text = (pkg / f"{name}.py").read_text()
        assert _all_of(pkg / f"{name}.py") == names
        assert "# AUTOGENERATED! DO NOT EDIT! File to edit: ../../../modules/98_multi/multi_dev.py." in text
        assert "#| export" not in text
    scaling = (pkg / "scaling.py").read_text()
    assert "from .stats import mean_abs" in scaling  # cross-module import made relative
    assert "EPS = 1e-12" in scaling  # the #| exporti cell: exported, not in __all__
    # The notebook heading becomes the docstring of the default_exp module only.
    assert (pkg / "stats.py").read_text().startswith('"""Summary statistics, scaling and clipping')
    init = (pkg / "__init__.py").read_text()
    assert init.startswith('"""Generated by `tito export` from modules/98_multi/multi_dev.py.')
    assert _all_of(pkg / "__init__.py") == [n for names in EXPECTED_ALL.values() for n in names]
    assert "from .stats import mean_abs, max_abs\n" in init
    assert max(len(line) for line in init.splitlines()) <= 100
    got = _python(multi, "import tinytorch.optimization.multi as m\n"
                         "from tinytorch.optimization.multi import scaling\n"
                         "print(m.mean_abs([-1, 3]), m.max_abs([-4, 3]), m.normalize([-1, 3]).round(9).tolist(),\n"
                         "      m.Clipper(0, 1)([-1, 0.5, 2]).tolist(), m.normalize is scaling.normalize)")
    # mean |[-1, 3]| = 2, max |[-4, 3]| = 4, [-1, 3] / 2, [-1, 0.5, 2] clipped into [0, 1]
    assert got.split() == ["2.0", "4.0", "[-0.5,", "1.5]", "[0.0,", "0.5,", "1.0]", "True"]


def test_multi_export_is_byte_stable_and_never_duplicates(multi, capsys):
    assert _export(multi, capsys)[0] == 0
    first = _tree(multi)
    mtimes = {p: p.stat().st_mtime_ns for p in (multi / PKG).iterdir()}
    code, out, _ = _export(multi, capsys)
    assert code == 0 and out.rstrip().endswith("(3 modules, 4 names; unchanged)")
    assert _tree(multi) == first
    assert {p: p.stat().st_mtime_ns for p in (multi / PKG).iterdir()} == mtimes  # nothing rewritten
    shutil.rmtree(multi / PKG)
    assert _export(multi, capsys)[0] == 0
    assert _export(multi, capsys)[0] == 0
    assert _tree(multi) == first  # same bytes from scratch: cell ids are stable
    stats = (multi / PKG / "stats.py").read_text()
    assert stats.count("def mean_abs") == 1 and stats.count("__all__") == 1


def test_multi_syntax_error_in_one_target_writes_nothing(multi, capsys):
    assert _export(multi, capsys)[0] == 0
    before = _tree(multi)
    _edit_multi(multi, "    def __call__(self, x):", "    def __call__(self, x)")
    code, _, err = _export(multi, capsys)
    line = (multi / MULTI_NB).read_text().splitlines().index("    def __call__(self, x)") + 1
    assert code == 1
    assert f"cell 8, line 10 (modules/98_multi/multi_dev.py:{line})" in err
    assert "def __call__(self, x)" in err
    assert _tree(multi) == before


def test_multi_failed_replace_restores_every_file(multi, capsys):
    assert _export(multi, capsys)[0] == 0
    pkg = multi / PKG
    (multi / "tinytorch/optimization/multi.py").write_text("OLD = 1\n")  # stale, removed first
    # The last target cannot be replaced: the modules before it have been replaced by then.
    (pkg / "clip.py").unlink()
    (pkg / "clip.py").mkdir()
    before = _tree(multi)
    for old, new in (("Mean absolute value", "Mean |x|"), ("Divide `x`", "Scale `x`"), ("Clip values", "Clamp")):
        _edit_multi(multi, old, new)
    code, _, err = _export(multi, capsys)
    assert code == 1 and "clip.py" in err and "no file was changed" in err
    assert _tree(multi) == before
    assert (pkg / "clip.py").is_dir()


def test_multi_failed_first_export_creates_nothing(multi, capsys):
    (multi / PKG / "clip.py").mkdir(parents=True)
    code, _, err = _export(multi, capsys)
    assert code == 1 and "no file was changed" in err
    assert sorted(p.relative_to(multi / PKG).as_posix() for p in (multi / PKG).rglob("*")) == ["clip.py"]


def test_multi_drift_names_each_out_of_sync_file(multi, capsys):
    from tito.export import drift

    drifted, _ = drift(_module(multi))
    assert sorted((multi / PKG).relative_to(multi).as_posix() + "/" + d.path.name for d in drifted) == [
        f"{PKG}/__init__.py", f"{PKG}/clip.py", f"{PKG}/scaling.py", f"{PKG}/stats.py"]
    assert {d.why for d in drifted} == {"is missing"}
    assert _export(multi, capsys)[0] == 0
    assert drift(_module(multi))[0] == []
    with open(multi / PKG / "scaling.py", "a") as f:
        f.write("# hand edit\n")
    (multi / PKG / "__init__.py").unlink()
    (multi / "tinytorch/optimization/multi.py").write_text("OLD = 1\n")
    drifted, _ = drift(_module(multi))
    assert [(d.path.relative_to(multi).as_posix(), d.why.split(" (")[0]) for d in drifted] == [
        (f"{PKG}/scaling.py", "differs from a fresh export"),
        (f"{PKG}/__init__.py", "is missing"),
        ("tinytorch/optimization/multi.py", "is stale")]


def test_multi_check_export_and_doctor_report_the_drifted_file(tito, multi):
    assert tito("export", "98").returncode == 0
    assert tito("export", "99").returncode == 0
    with open(multi / PKG / "clip.py", "a") as f:
        f.write("# hand edit\n")
    r = tito("test", "98", "--check-export")
    assert r.returncode == 1
    assert r.stdout.splitlines() == [f"FAIL: {PKG}/clip.py differs from a fresh export: package drifted "
                                     "from notebook; run tito export 98_multi"]
    r = tito("doctor")
    assert r.returncode == 1
    assert f"98_multi: {PKG}/ OUT OF SYNC" in r.stdout and f"    {PKG}/clip.py differs" in r.stdout
    assert "99_demo: tinytorch/optimization/demo.py in sync" in r.stdout


def test_layout_change_removes_the_stale_module_or_package(multi, capsys):
    single = (multi / MULTI_NB).read_text()
    for target in ("stats", "scaling", "clip"):
        single = single.replace(f"#| export optimization.multi.{target}\n", "#| export\n")
        single = single.replace(f"#| exporti optimization.multi.{target}\n", "#| exporti\n")
    single = single.replace("#| default_exp optimization.multi.stats", "#| default_exp optimization.multi")
    single = single.replace("from tinytorch.optimization.multi.stats import mean_abs\n", "")
    split = (multi / MULTI_NB).read_text()
    where = "import tinytorch.optimization.multi as m; print(m.__file__, m.normalize([2]).round(9)[0])"

    (multi / MULTI_NB).write_text(single)  # the old layout: one module file
    assert _export(multi, capsys)[0] == 0
    assert (multi / "tinytorch/optimization/multi.py").is_file()

    (multi / MULTI_NB).write_text(split)  # the new layout: the module file must go
    code, out, err = _export(multi, capsys)
    assert code == 0, err
    assert "removed tinytorch/optimization/multi.py (module file shadowed by the package" in out
    assert not (multi / "tinytorch/optimization/multi.py").exists()
    assert _python(multi, where).split() == [str(multi / PKG / "__init__.py"), "1.0"]

    hand_written = multi / PKG / "notes.py"
    hand_written.write_text("NOTE = 1\n")
    (multi / MULTI_NB).write_text(single)  # and back: the generated package files must go
    code, out, err = _export(multi, capsys)
    assert code == 0, err
    assert sorted(p.name for p in (multi / PKG).iterdir()) == ["notes.py"]  # not generated: kept
    assert _python(multi, where).split() == [str(multi / "tinytorch/optimization/multi.py"), "1.0"]


def test_target_no_longer_exported_is_removed(multi, capsys):
    assert _export(multi, capsys)[0] == 0
    (multi / PKG / "notes.py").write_text("NOTE = 1\n")  # hand-written: must survive
    _edit_multi(multi, "#| export optimization.multi.clip", "#| export optimization.multi.clipping")
    code, out, err = _export(multi, capsys)
    assert code == 0, err
    assert "removed tinytorch/optimization/multi/clip.py (generated from this notebook but no longer" in out
    assert sorted(p.name for p in (multi / PKG).iterdir()) == [
        "__init__.py", "clipping.py", "notes.py", "scaling.py", "stats.py"]
    assert "from .clipping import Clipper" in (multi / PKG / "__init__.py").read_text()


def test_notebook_override_exports_that_copy(multi, tmp_path, capsys):
    from tito.export import drift

    copy = tmp_path / "student" / "multi_dev.py"
    copy.parent.mkdir()
    copy.write_text((multi / MULTI_NB).read_text().replace("Divide `x`", "Student: divide `x`"))
    code, out, err = _export(multi, capsys, notebook=copy)
    assert code == 0, err
    text = (multi / PKG / "scaling.py").read_text()
    assert "Student: divide" in text
    assert f"File to edit: {os.path.relpath(copy, multi / PKG)}." in text
    assert drift(_module(multi), notebook=copy)[0] == []
    assert {d.path.name for d in drift(_module(multi))[0]} == {"__init__.py", "clip.py", "scaling.py", "stats.py"}


@pytest.mark.parametrize("edit, message", [
    (("class Clipper:", "class mean_abs:"),
     "'mean_abs' is exported by both optimization.multi.stats and optimization.multi.clip"),
    (("#| export optimization.multi.clip", "#| export optimization.multi.clip extra"),
     "'#| export optimization.multi.clip extra': expected at most one dotted module name"),
    (("#| export optimization.multi.clip", "#| export optimization.multi.stats.clip"),
     "export targets optimization.multi.stats and optimization.multi.stats.clip conflict"),
])
def test_multi_rejects_bad_notebooks_and_writes_nothing(multi, capsys, edit, message):
    _edit_multi(multi, *edit)
    code, _, err = _export(multi, capsys)
    assert code == 1 and message in err
    assert not (multi / PKG).exists()


def test_hand_written_package_init_is_not_overwritten(multi, capsys):
    init = multi / PKG / "__init__.py"
    init.parent.mkdir()
    init.write_text("VALUE = 1\n")
    code, _, err = _export(multi, capsys)
    assert code == 1 and "was not generated by tito export" in err
    assert sorted(p.name for p in init.parent.iterdir()) == ["__init__.py"]
    assert init.read_text() == "VALUE = 1\n"


# ----------------------------------------------------------------- two notebooks, one package
MORE_NB = "modules/98_multi/multi_more_dev.py"


@pytest.fixture
def two(multi):
    """Module 98 with a second notebook (multi_more_dev.py -> optimization.multi.robust)."""
    yml = multi / "modules/98_multi/module.yaml"
    yml.write_text(yml.read_text() + "notebooks: [multi_dev.py, multi_more_dev.py]\n")
    return multi


def _edit_more(root, old, new):
    p = root / MORE_NB
    text = p.read_text()
    assert text.count(old) == 1, old
    p.write_text(text.replace(old, new))


def test_module_notebooks_main_first(two):
    mod = _module(two)
    assert [p.name for p in mod.notebooks] == ["multi_dev.py", "multi_more_dev.py"]
    assert mod.notebook.name == "multi_dev.py"  # the main one, for the commands that take one
    yml = two / "modules/98_multi/module.yaml"
    yml.write_text(yml.read_text().replace("notebooks: [multi_dev.py, multi_more_dev.py]",
                                           "notebooks: [multi_more_dev.py, multi_dev.py]"))
    assert [p.name for p in _module(two).notebooks] == ["multi_dev.py", "multi_more_dev.py"]  # notebook: wins
    yml.write_text(yml.read_text().replace("notebooks: [multi_more_dev.py, multi_dev.py]", "notebooks: multi"))
    from tito.errors import TitoError

    with pytest.raises(TitoError, match="'notebooks' must be a non-empty list"):
        _module(two).notebooks


def test_two_notebooks_export_one_package_and_init(two, capsys):
    code, out, err = _export(two, capsys)
    assert code == 0, err
    assert out.splitlines()[-1] == ("exported modules/98_multi/multi_dev.py + multi_more_dev.py -> "
                                    "tinytorch/optimization/multi/ (4 modules, 5 names; written)")
    pkg = two / PKG
    assert sorted(p.name for p in pkg.iterdir()) == ["__init__.py", "clip.py", "robust.py", "scaling.py",
                                                     "stats.py"]
    robust = (pkg / "robust.py").read_text()
    assert "File to edit: ../../../modules/98_multi/multi_more_dev.py." in robust
    assert "from .stats import max_abs" in robust
    assert "File to edit: ../../../modules/98_multi/multi_dev.py." in (pkg / "stats.py").read_text()
    init = (pkg / "__init__.py").read_text()
    assert init.startswith('"""Generated by `tito export` from 2 notebooks:\nmodules/98_multi/multi_dev.py\n'
                           "modules/98_multi/multi_more_dev.py\n")
    assert _all_of(pkg / "__init__.py") == [n for names in EXPECTED_ALL.values() for n in names] + ["unit_max"]
    assert "from .robust import unit_max\n" in init
    got = _python(two, "import tinytorch.optimization.multi as m\nprint(m.unit_max([-4, 2]).tolist(), m.mean_abs([-2]))")
    assert got.split() == ["[-1.0,", "0.5]", "2.0"]
    # byte-stable: a second export writes nothing, an export from scratch gives the same bytes
    first = _tree(two)
    assert _export(two, capsys)[1].rstrip().endswith("(4 modules, 5 names; unchanged)")
    shutil.rmtree(pkg)
    assert _export(two, capsys)[0] == 0 and _tree(two) == first


def test_two_notebooks_all_or_nothing(two, capsys):
    assert _export(two, capsys)[0] == 0
    before = _tree(two)
    _edit_multi(two, "Mean absolute value", "Mean |x|")      # a valid change in the main notebook ...
    _edit_more(two, "def unit_max(x):", "def unit_max(x)")   # ... and a syntax error in the second
    code, _, err = _export(two, capsys)
    assert code == 1 and "multi_more_dev.py" in err and "package left unchanged" in err
    assert _tree(two) == before


def test_two_notebooks_drift_check_export_and_doctor(two, tito, capsys):
    from tito.export import drift

    assert _export(two, capsys)[0] == 0
    assert drift(_module(two))[0] == []
    with open(two / PKG / "robust.py", "a") as f:
        f.write("# hand edit\n")
    _edit_multi(two, "Mean absolute value", "Mean |x|")
    assert sorted((d.path.name, d.why) for d in drift(_module(two))[0]) == [
        ("robust.py", "differs from a fresh export"), ("stats.py", "differs from a fresh export")]
    r = tito("test", "98", "--check-export", "--solution")
    assert r.returncode == 1
    assert [line for line in r.stdout.splitlines() if line.startswith("FAIL")] == [
        f"FAIL: {PKG}/{name}.py differs from a fresh export: package drifted from notebook; run tito export "
        "98_multi" for name in ("stats", "robust")]
    r = tito("doctor")
    assert r.returncode == 1
    assert (f"98_multi: {PKG}/ (from modules/98_multi/multi_dev.py + multi_more_dev.py) OUT OF SYNC"
            in r.stdout)
    assert f"    {PKG}/robust.py differs" in r.stdout
    (two / MORE_NB).unlink()
    r = tito("doctor")
    assert r.returncode == 1 and f"98_multi: notebook {MORE_NB} missing" in r.stdout


def test_two_notebooks_override_replaces_only_its_namesake(two, tmp_path, capsys):
    from tito.export import drift

    assert _export(two, capsys)[0] == 0
    robust_before = (two / PKG / "robust.py").read_bytes()
    student = tmp_path / "student"
    student.mkdir()
    main_copy = student / "multi_dev.py"
    main_copy.write_text((two / MULTI_NB).read_text().replace("Divide `x`", "Student: divide `x`"))
    code, out, err = _export(two, capsys, notebook=main_copy)
    assert code == 0, err
    assert "removed" not in out
    assert "Student: divide" in (two / PKG / "scaling.py").read_text()
    assert (two / PKG / "robust.py").read_bytes() == robust_before  # the other notebook's module: kept
    assert drift(_module(two), notebook=main_copy)[0] == []
    # a copy of the second notebook replaces that one (matched by file name), not the main one
    more_copy = student / "multi_more_dev.py"
    more_copy.write_text((two / MORE_NB).read_text().replace("Divide `x` by its largest", "Student: largest"))
    code, out, err = _export(two, capsys, notebook=more_copy)
    assert code == 0, err
    assert "Student: largest" in (two / PKG / "robust.py").read_text()
    assert "Student: divide" not in (two / PKG / "scaling.py").read_text()
    assert drift(_module(two), notebook=more_copy)[0] == []
    assert {d.path.name for d in drift(_module(two))[0]} == {"__init__.py", "robust.py"}


def test_two_notebooks_same_target_refused_and_stale_module_removed(two, capsys):
    _edit_more(two, "#| default_exp optimization.multi.robust", "#| default_exp optimization.multi.clip")
    code, _, err = _export(two, capsys)
    assert code == 1 and "optimization.multi.clip is exported by both modules/98_multi/multi_dev.py and " \
                         "modules/98_multi/multi_more_dev.py" in err
    assert not (two / PKG).exists()
    _edit_more(two, "#| default_exp optimization.multi.clip", "#| default_exp optimization.multi.robust")
    assert _export(two, capsys)[0] == 0
    _edit_more(two, "#| default_exp optimization.multi.robust", "#| default_exp optimization.multi.robust2")
    code, out, err = _export(two, capsys)
    assert code == 0, err
    assert "removed tinytorch/optimization/multi/robust.py (generated from this notebook" in out
    assert sorted(p.name for p in (two / PKG).iterdir()) == ["__init__.py", "clip.py", "robust2.py",
                                                              "scaling.py", "stats.py"]
