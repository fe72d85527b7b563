"""Locate the project root and its modules.

The root is the nearest directory, walking up from the current directory, that holds a
``pyproject.toml`` with a ``[tool.nbdev]`` table; failing that, the checkout tito itself
was imported from (if it has one). Modules are the ``modules/NN_name/`` directories under
the nbdev ``nbs_path``; each may have a ``module.yaml`` (keys used: ``number``, ``name``,
``notebook``, ``notebooks``, ``demo``, ``notebook_tests``) — anything missing is derived from the
directory. ``notebooks: [main_dev.py, extra_dev.py]`` lists every notebook exported into the
module's package (the first is the main one, ``notebook``); without it the module has one.
"""
from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from tito.errors import TitoError, UsageError

_MODULE_DIR = re.compile(r"^(\d+)_([A-Za-z0-9_]+)$")


def _nbdev_table(pyproject: Path) -> dict | None:
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return data.get("tool", {}).get("nbdev")


@dataclass
class Project:
    root: Path
    lib_path: Path
    nbs_path: Path

    @classmethod
    def find(cls, start: Path | None = None) -> "Project":
        start = Path(start or Path.cwd()).resolve()
        candidates = [start, *start.parents]
        # Fallback: the checkout this tito package lives in (e.g. an editable install).
        candidates.append(Path(__file__).resolve().parent.parent)
        for d in candidates:
            f = d / "pyproject.toml"
            if f.is_file():
                cfg = _nbdev_table(f)
                if cfg is not None:
                    return cls(root=d,
                               lib_path=d / cfg.get("lib_path", "tinytorch"),
                               nbs_path=d / cfg.get("nbs_path", "nbs"))
        raise TitoError(f"no pyproject.toml with [tool.nbdev] found above {start}")

    @property
    def state_dir(self) -> Path:
        """Where tito keeps local results (``.tito/``, should be gitignored)."""
        return self.root / ".tito"

    def modules(self) -> list["Module"]:
        if not self.nbs_path.is_dir():
            return []
        found = []
        for d in sorted(self.nbs_path.iterdir()):
            m = _MODULE_DIR.match(d.name)
            if d.is_dir() and m:
                found.append(Module.load(self, d, int(m.group(1)), m.group(2)))
        return sorted(found, key=lambda mod: (mod.number, mod.name))

    def module(self, spec: str) -> "Module":
        """Resolve ``18_compression``, ``18`` or ``compression`` to a module."""
        mods = self.modules()
        spec = spec.strip().rstrip("/")
        spec = Path(spec).name if "/" in spec else spec
        for mod in mods:
            if spec == mod.dirname or spec == mod.name:
                return mod
            if spec.isdigit() and int(spec) == mod.number:
                return mod
        known = [m.dirname for m in mods]
        close = difflib.get_close_matches(spec, known + [m.name for m in mods], n=3, cutoff=0.5)
        msg = f"unknown module '{spec}'."
        if close:
            msg += f" Did you mean: {', '.join(close)}?"
        msg += f" Known modules: {', '.join(known) if known else '(none found in ' + str(self.nbs_path) + ')'}"
        raise UsageError(msg)

    def rel(self, path: Path) -> str:
        """``path`` relative to the root, POSIX style (for messages and headers)."""
        try:
            return Path(path).resolve().relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


@dataclass
class Module:
    project: Project
    path: Path
    number: int
    name: str
    meta: dict = field(default_factory=dict)

    @classmethod
    def load(cls, project: Project, path: Path, number: int, name: str) -> "Module":
        meta: dict = {}
        yml = path / "module.yaml"
        if yml.is_file():
            import yaml  # PyYAML comes with jupytext

            try:
                meta = yaml.safe_load(yml.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as e:
                raise TitoError(f"{project.rel(yml)}: invalid YAML: {e}") from None
            if not isinstance(meta, dict):
                raise TitoError(f"{project.rel(yml)}: expected a mapping")
        return cls(project, path, int(meta.get("number", number)), str(meta.get("name", name)), meta)

    @property
    def dirname(self) -> str:
        return self.path.name

    @property
    def notebook(self) -> Path:
        """The jupytext percent-format source of truth (the main one if there are several)."""
        if self.meta.get("notebook"):
            return self.path / self.meta["notebook"]
        if self.meta.get("notebooks"):
            return self.notebooks[0]
        default = self.path / f"{self.name}_dev.py"
        if default.exists():
            return default
        devs = sorted(self.path.glob("*_dev.py"))
        return devs[0] if len(devs) == 1 else default

    @property
    def notebooks(self) -> list[Path]:
        """Every notebook exported into the module's package: ``notebook`` first, then the
        others listed under ``notebooks`` in module.yaml, in their order ([notebook] if none)."""
        names = self.meta.get("notebooks")
        if names is None:
            return [self.notebook]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise TitoError(f"{self.project.rel(self.path / 'module.yaml')}: 'notebooks' must be a "
                            "non-empty list of file names")
        listed = [self.path / n for n in dict.fromkeys(names)]
        main = self.path / self.meta["notebook"] if self.meta.get("notebook") else listed[0]
        return [main] + [p for p in listed if p != main]

    def require_notebook(self) -> Path:
        nb = self.notebook
        if not nb.is_file():
            raise TitoError(f"notebook {self.project.rel(nb)} not found")
        return nb

    @property
    def ipynb(self) -> Path:
        return self.notebook.with_suffix(".ipynb")

    @property
    def tests_dir(self) -> Path:
        return self.project.root / "tests" / self.dirname

    @property
    def checkpoint_file(self) -> Path:
        return self.project.root / "tests" / "checkpoints" / f"checkpoint_{self.dirname}.py"

    @property
    def bonus_checkpoint_files(self) -> list[Path]:
        """``checkpoint_NN_name_<part>.py``: the going-further notebooks' capabilities, graded
        apart from the module's score."""
        return sorted(self.checkpoint_file.parent.glob(f"checkpoint_{self.dirname}_*.py"))
