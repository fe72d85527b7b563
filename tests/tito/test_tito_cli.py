"""The command surface: help, exit codes, module lookup."""
import pytest

COMMANDS = ["export", "notebook", "test", "checkpoint", "release", "grade", "demo", "doctor", "module", "nbgrader"]


def test_help_exits_zero(tito):
    r = tito("--help")
    assert r.returncode == 0, r.stderr
    for cmd in COMMANDS:
        assert cmd in r.stdout


SUBCOMMANDS = [["checkpoint", "run"], ["checkpoint", "status"], ["module", "start"], ["module", "complete"],
               ["module", "status"], ["module", "reset"], ["nbgrader", "generate"]]


@pytest.mark.parametrize("argv", [[c, "--help"] for c in COMMANDS] + [[*s, "--help"] for s in SUBCOMMANDS])
def test_every_command_has_help(tito, argv):
    r = tito(*argv)
    assert r.returncode == 0, r.stderr
    assert "usage: tito" in r.stdout


def test_no_command_is_usage_error(tito):
    assert tito().returncode == 2


def test_unknown_module_exits_2_with_suggestions(tito):
    r = tito("export", "dem")
    assert r.returncode == 2
    assert "unknown module 'dem'" in r.stderr
    assert "Did you mean" in r.stderr and "demo" in r.stderr
    assert "99_demo" in r.stderr
    r = tito("grade", "42")
    assert r.returncode == 2 and "99_demo" in r.stderr


@pytest.mark.parametrize("spec", ["99_demo", "99", "demo"])
def test_module_spellings(tito, project, spec):
    r = tito("export", spec)
    assert r.returncode == 0, r.stderr
    assert (project / "tinytorch/optimization/demo.py").is_file()


def test_works_from_a_subdirectory(tito, project):
    r = tito("export", "99", cwd=project / "modules" / "99_demo")
    assert r.returncode == 0, r.stderr
    assert (project / "tinytorch/optimization/demo.py").is_file()
