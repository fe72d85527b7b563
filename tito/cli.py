"""``tito``: command-line entry point (argparse; heavy imports happen per command).

Exit status: 0 success, 1 failure, 2 usage error (bad arguments, unknown module).
"""
from __future__ import annotations

import argparse
import sys

from tito import __version__
from tito.errors import TitoError

MODULE_HELP = "module as 18_compression, 18 or compression"
NOTEBOOK_NOTE = ("Uses your workspace notebook (workspace/NN_name/, see 'tito module start') when "
                 "there is one, else the instructor's notebook; --solution / --notebook choose.")


def _notebook_args(p: argparse.ArgumentParser) -> None:
    """--solution / --notebook PATH: which notebook a command works on."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--solution", action="store_true",
                   help="use the instructor's notebook modules/NN_name/<name>_dev.py")
    g.add_argument("--notebook", metavar="PATH", help="use this jupytext .py notebook")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tito", description="TinyTorch course tool: export, test, release and grade modules.")
    p.add_argument("--version", action="version", version=f"tito {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("export", help="export a module notebook's '#| export' cells into tinytorch/",
                       description="Export the '#| export' cells of the module notebook (.py) into the "
                                   "package file named by '#| default_exp' (nbdev 3, atomic write). "
                                   + NOTEBOOK_NOTE)
    s.add_argument("module", help=MODULE_HELP)
    _notebook_args(s)

    s = sub.add_parser("notebook", help="write the .ipynb next to the module's .py notebook",
                       description="Convert modules/NN_name/<name>_dev.py to .ipynb with jupytext.")
    s.add_argument("module", help=MODULE_HELP)

    s = sub.add_parser("test", help="run a module notebook headlessly and its pytest suite",
                       description="Execute the module notebook in a kernel (inline tests), then run "
                                   "pytest on tests/NN_name (refused if the package is not a fresh export "
                                   "of the notebook). --check-export only checks that the package "
                                   "file equals a fresh export. " + NOTEBOOK_NOTE)
    s.add_argument("module", help=MODULE_HELP)
    _notebook_args(s)
    g = s.add_mutually_exclusive_group()
    g.add_argument("--notebook-only", action="store_true", help="only execute the notebook")
    g.add_argument("--pytest-only", action="store_true", help="only run tests/NN_name with pytest")
    g.add_argument("--check-export", action="store_true",
                   help="only check the package file equals a fresh export")

    s = sub.add_parser("checkpoint", help="run or show capability checkpoints",
                       description="Checkpoints are tests/checkpoints/checkpoint_NN_name.py; "
                                   "results of runs are kept in .tito/checkpoints.json.")
    csub = s.add_subparsers(dest="checkpoint_command", metavar="ACTION")
    csub.required = True
    c = csub.add_parser("run", help="run a module's checkpoint tests and store the results",
                        description="Run the checkpoint with pytest and print capability | result | message.")
    c.add_argument("module", help=MODULE_HELP)
    c.add_argument("-v", "--verbose", action="store_true", help="show pytest's own output")
    _notebook_args(c)
    c = csub.add_parser("status", help="show stored checkpoint results",
                        description="Print the results of the last 'tito checkpoint run' (no tests are run).")
    c.add_argument("module", nargs="?", help=MODULE_HELP + " (default: all)")

    s = sub.add_parser("release", help="write the student version (solutions removed)",
                       description="Replace '### BEGIN SOLUTION' ... '### END SOLUTION' regions with "
                                   "'raise NotImplementedError()' and write .py + .ipynb with nbgrader metadata.")
    s.add_argument("module", help=MODULE_HELP)
    s.add_argument("--out", metavar="DIR", help="output directory (default: student/NN_name)")
    s.add_argument("--force", action="store_true", help="overwrite existing files")

    s = sub.add_parser("grade", help="score the checkpoint capabilities against the exported package",
                       description="Run the checkpoint (scored: points from its POINTS dict, default 1) "
                                   "and the module tests (not scored, summarised in one line); print one "
                                   "row per capability. Refused if the package is not a fresh export of the "
                                   "notebook. Exit 0 exactly when the score is full. " + NOTEBOOK_NOTE)
    s.add_argument("module", help=MODULE_HELP)
    _notebook_args(s)
    s.add_argument("--json", metavar="FILE", help="write Gradescope-style results JSON to FILE")
    s.add_argument("-v", "--verbose", action="store_true", help="show pytest's own output")

    s = sub.add_parser("demo", help="run the module's demo script (module.yaml 'demo:')",
                       description="Run the script named by 'demo:' in module.yaml with this Python.")
    s.add_argument("module", help=MODULE_HELP)
    s.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the script")

    s = sub.add_parser("module", help="student workspace: start, complete, status, reset",
                       description="Work on a module as a student, in workspace/NN_name/ (never in the "
                                   "instructor's notebook).")
    msub = s.add_subparsers(dest="module_command", metavar="ACTION")
    msub.required = True
    m = msub.add_parser("start", help="write the student notebook into workspace/NN_name/",
                        description="Write the student version (solutions replaced by stubs, as 'tito "
                                    "release') to workspace/NN_name/ as a jupytext .py/.ipynb pair and "
                                    "print the next steps. Refuses if the workspace already holds work.")
    m.add_argument("module", help=MODULE_HELP)
    m = msub.add_parser("complete", help="export your notebook, run it headless, run the checkpoint, score it",
                        description="Export the workspace notebook into the package, run it in a fresh "
                                    "kernel, run the checkpoint and print the score per capability with "
                                    "what to fix first. Exit 0 when the notebook runs and the score is full.")
    m.add_argument("module", help=MODULE_HELP)
    m.add_argument("-v", "--verbose", action="store_true", help="show pytest's own output")
    m = msub.add_parser("status", help="per module: started, what the package holds, last score",
                        description="Show, per module, whether a workspace was started, whether the "
                                    "package is an export of it, and the last score.")
    m.add_argument("module", nargs="?", help=MODULE_HELP + " (default: all)")
    m = msub.add_parser("reset", help="back up your workspace notebook and start again from a fresh copy",
                        description="Copy the workspace notebook pair into workspace/NN_name/backup-<time>/ "
                                    "and write a fresh student notebook.")
    m.add_argument("module", help=MODULE_HELP)

    s = sub.add_parser("nbgrader", help="nbgrader course directory for instructors",
                       description="Instructor tools for nbgrader 0.9 (pip install -e '.[instructor]').")
    nsub = s.add_subparsers(dest="nbgrader_command", metavar="ACTION")
    nsub.required = True
    n = nsub.add_parser("generate", help="write an nbgrader course directory for a module",
                        description="Write <out>/source/NN_name/<name>.ipynb (solution, grade and locked "
                                    "cells stamped; grade cells worth the checkpoint POINTS of what they "
                                    "check) and <out>/nbgrader_config.py. Then, in <out>: "
                                    "'nbgrader generate_assignment NN_name'.")
    n.add_argument("module", help=MODULE_HELP)
    n.add_argument("--out", metavar="DIR", help="course directory (default: nbgrader/)")
    n.add_argument("--force", action="store_true", help="overwrite existing files")

    sub.add_parser("doctor", help="check the environment and that exports are in sync",
                   description="Show Python/numpy/jupytext/nbdev versions, try importing the package "
                               "and compare each exported file with a fresh export.")
    return p


def _dispatch(args) -> int:
    from tito.project import Project

    project = Project.find()
    cmd = args.command
    if cmd == "doctor":
        from tito.doctor import doctor_command
        return doctor_command(project)
    if cmd == "checkpoint" and args.checkpoint_command == "status":
        from tito.checkpoint import status_command
        return status_command(project, project.module(args.module) if args.module else None)
    if cmd == "module" and args.module_command == "status":
        from tito.workspace import status_command
        return status_command(project, project.module(args.module) if args.module else None)

    module = project.module(args.module)
    if cmd == "module":
        from tito import workspace
        if args.module_command == "complete":
            return workspace.complete_command(module, verbose=args.verbose)
        return {"start": workspace.start_command, "reset": workspace.reset_command}[args.module_command](module)
    if cmd == "nbgrader":
        from tito.nbgrader_course import generate_command
        return generate_command(module, out=args.out, force=args.force)
    if cmd in ("export", "test", "grade", "checkpoint"):
        from tito.workspace import choose
        source = choose(module, solution=args.solution, notebook=args.notebook)
    if cmd == "export":
        from tito.export import export_command
        return export_command(source.module, notebook=source.notebook)
    if cmd == "notebook":
        from tito.notebook import notebook_command
        return notebook_command(module)
    if cmd == "test":
        from tito.testing import test_command
        return test_command(source, args.notebook_only, args.pytest_only, args.check_export)
    if cmd == "checkpoint":
        from tito.checkpoint import run_command
        return run_command(source, verbose=args.verbose)
    if cmd == "release":
        from tito.release import release_command
        return release_command(module, out=args.out, force=args.force)
    if cmd == "grade":
        from tito.grading import grade_command
        from tito.workspace import require_fresh_export
        require_fresh_export(source)
        return grade_command(source, json_path=args.json, verbose=args.verbose)
    if cmd == "demo":
        from tito.demo import demo_command
        return demo_command(module, args.args)
    raise AssertionError(cmd)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except TitoError as e:
        print(f"tito: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("tito: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
