"""The README's examples as written: every Python block runs (tiny models), every command line parses."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lorainit import cli, cliargs

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", README, flags=re.S)


def commands() -> list[list[str]]:
    """Every `lorainit ...` command of the README's code blocks (the python -m and torchrun forms too), but
    those with '...' placeholders, comments stripped."""
    out = []
    for lang, text in BLOCKS:
        for line in text.splitlines():
            line = line.split("  #")[0].strip()
            m = re.search(r"(?:^|-m )lorainit (.*)$", line)
            if m and "..." not in line:
                out.append(shlex.split(m.group(1)))
    return out


def test_the_readme_has_examples():
    assert len([b for lang, b in BLOCKS if lang == "python"]) >= 2 and len(commands()) >= 12


@pytest.mark.parametrize("argv", commands(), ids=lambda a: " ".join(a)[:60])
def test_every_command_line_parses(argv, monkeypatch):
    class Parsed(Exception):
        pass

    real = cliargs.Parser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        real(self, args, namespace)
        raise Parsed

    monkeypatch.setattr(cliargs.Parser, "parse_args", parse_then_stop)
    with pytest.raises(Parsed):
        cli.main(argv)


@pytest.mark.parametrize("code", [b for lang, b in BLOCKS if lang == "python"], ids=lambda c: c.splitlines()[0][:40])
def test_every_python_block_runs(code, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
