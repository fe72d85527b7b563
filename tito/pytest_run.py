"""Run pytest in a subprocess and read its results from a JUnit XML report.

Used by ``tito test``, ``tito checkpoint`` and ``tito grade``. The subprocess runs from
the project root with the root first on ``PYTHONPATH``, so it imports the project's own
``tinytorch`` (as currently exported), not whatever else is installed.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Case:
    file: str        # test file, relative to the root
    name: str        # test name as pytest reports it, e.g. test_x or test_x[1]
    outcome: str     # passed | failed | error | skipped
    message: str     # first line of the failure message ('' when passed)
    output: str      # full failure text (traceback), '' when passed

    @property
    def base_name(self) -> str:
        return self.name.split("[", 1)[0]

    @property
    def is_collection_error(self) -> bool:
        """pytest names a file that failed to import after its module (dotted)."""
        return self.outcome == "error" and "." in self.base_name

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"

    def to_dict(self) -> dict:
        return asdict(self)


def project_env(project) -> dict:
    env = dict(os.environ)
    parts = [str(project.root)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    return env


def run_pytest(project, paths: list[Path], extra_args: list[str] | None = None,
               quiet: bool = False) -> tuple[int, list[Case]]:
    """Run pytest on ``paths``; return (pytest exit code, test cases)."""
    with tempfile.TemporaryDirectory(prefix="tito-pytest-") as tmp:
        xml = Path(tmp) / "report.xml"
        cmd = [sys.executable, "-m", "pytest", *[str(p) for p in paths],
               f"--junitxml={xml}", "-o", "junit_family=xunit1",
               "-p", "no:cacheprovider", f"--rootdir={project.root}", "-q", "--no-header", "-rN",
               *(extra_args or [])]
        proc = subprocess.run(cmd, cwd=project.root, env=project_env(project),
                              stdout=subprocess.PIPE if quiet else None,
                              stderr=subprocess.STDOUT if quiet else None, text=True)
        cases = parse_junit(xml, project) if xml.exists() else []
    return proc.returncode, cases


def _first_line(text: str) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def parse_junit(xml: Path, project) -> list[Case]:
    root = ET.parse(xml).getroot()
    cases = []
    for tc in root.iter("testcase"):
        name = tc.get("name", "?")
        file = tc.get("file") or (tc.get("classname", "").replace(".", "/") + ".py")
        outcome, message, output = "passed", "", ""
        for tag in ("failure", "error", "skipped"):
            el = tc.find(tag)
            if el is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                output = (el.text or "").strip()
                message = _first_line(el.get("message", "")) or _first_line(output)
                if message == "collection failure":  # say why: the last "E   ..." line
                    why = [ln[1:].strip() for ln in output.splitlines() if ln.startswith("E ")]
                    message = f"collection failure: {why[-1]}" if why else message
                break
        cases.append(Case(file=file, name=name, outcome=outcome, message=message, output=output))
    return cases
