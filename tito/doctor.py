"""``tito doctor``: report the environment and whether exported files are in sync."""
from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def doctor_command(project) -> int:
    from tito.errors import TitoError
    from tito.pytest_run import project_env

    ok = True
    print(f"project root: {project.root}")
    print(f"python      : {platform.python_version()} ({sys.executable})")
    # (distribution, required, what it is for when missing); optional ones never fail doctor
    for dist, needed, purpose in (("numpy", True, ""), ("jupytext", True, ""), ("nbdev", True, ""),
                                  ("pytest", True, ""),
                                  ("nbclient", False, "needed for tito test"),
                                  ("ipykernel", False, "needed for tito test"),
                                  ("jupyterlab", False, "students: pip install -e \".[student]\""),
                                  ("nbgrader", False, "instructors: pip install -e \".[instructor]\"")):
        v = _version(dist)
        note = "" if v else ("MISSING" if needed else f"missing ({purpose})")
        ok = ok and (v is not None or not needed)
        print(f"{dist:<12}: {v or note}")
    nbdev_v = _version("nbdev")
    if nbdev_v and not nbdev_v.startswith("3."):
        print(f"  nbdev {nbdev_v} found; tito needs nbdev 3")
        ok = False

    pkg = project.lib_path.name
    proc = subprocess.run([sys.executable, "-c", f"import {pkg}; print({pkg}.__file__)"],
                          cwd=project.root, env=project_env(project), capture_output=True, text=True)
    if proc.returncode == 0:
        print(f"import {pkg:<6}: ok ({proc.stdout.strip()})")
    else:
        ok = False
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        print(f"import {pkg:<6}: FAILED: {last}")

    mods = project.modules()
    if not mods:
        print("modules     : none found")
    for mod in mods:
        try:
            missing = [nb for nb in mod.notebooks if not nb.is_file()]
        except TitoError as e:  # a malformed 'notebooks' list in module.yaml
            print(f"{mod.dirname}: {e}")
            ok = False
            continue
        if missing:
            for nb in missing:
                print(f"{mod.dirname}: notebook {project.rel(nb)} missing")
            ok = False
            continue
        try:
            from tito.export import drift

            drifted, r = drift(mod)
        except TitoError as e:
            print(f"{mod.dirname}: export failed: {e}")
            ok = False
            continue
        state = "in sync" if not drifted else "OUT OF SYNC (run tito export " + mod.dirname + ")"
        source = f" (from {r.sources(project)})" if len(r.notebooks) > 1 else ""
        print(f"{mod.dirname}: {r.describe(project)}{source} {state}")
        for d in drifted:
            print(f"    {project.rel(d.path)} {d.why}")
        ok = ok and not drifted
    print("doctor: all good" if ok else "doctor: problems found")
    return 0 if ok else 1
