"""The Python code printed in the READMEs runs as printed (in a scratch directory)."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
READMES = [ROOT / "README.md", ROOT / "modules" / "18_compression" / "README.md"]
BLOCKS = [(readme, i, code) for readme in READMES
          for i, code in enumerate(re.findall(r"```python\n(.*?)```", readme.read_text(encoding="utf-8"), re.S))]


def test_the_module_readme_shows_the_library_in_use():
    assert any("modules" in str(readme) for readme, _, _ in BLOCKS), "the module README has a Python example"


@pytest.mark.parametrize("readme,index,code", BLOCKS, ids=[f"{r.parent.name}-{i}" for r, i, _ in BLOCKS])
def test_readme_python_block_runs_as_printed(readme, index, code, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # files the example writes land in the scratch directory
    exec(compile(code, f"{readme.name} python block {index}", "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out.strip(), "the example prints what it shows"
