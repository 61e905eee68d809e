"""A Ctrl-C that arrives inside an import or inside torch's Python code is raised at the next line
of the program's own code, after that code has finished: never inside it, where an import is
left half made or pybind11 aborts the process (exit -6)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Each script ends with the line it prints; the grace timer (1 s) is never reached.
PRELUDE = """
import os, signal, sys
from grokscope.cli import endings
signal.signal(signal.SIGINT, endings._on_interrupt)
"""


def run_script(tmp_path: Path, body: str) -> str:
    script = tmp_path / "script.py"
    script.write_text(PRELUDE + textwrap.dedent(body))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={"PYTHONPATH": f"{ROOT}:{tmp_path}", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_an_interrupt_during_an_import_lets_the_import_finish(tmp_path):
    # The module interrupts itself, then goes on with more of its top level.
    (tmp_path / "interrupted_module.py").write_text(
        "import os, signal\nos.kill(os.getpid(), signal.SIGINT)\ntotal = sum(range(100000))\ncompleted = True\n")
    out = run_script(tmp_path, """
        try:
            import interrupted_module
            print("not interrupted")
        except KeyboardInterrupt as exc:
            line = exc.__traceback__.tb_lineno
            print(getattr(sys.modules.get("interrupted_module"), "completed", False), line)
        sys.stdout.flush(); os._exit(0)
        """)
    completed, line = out.split()
    assert completed == "True"
    # Raised at the line after the import, in the script's own code.
    script_lines = (tmp_path / "script.py").read_text().splitlines()
    assert script_lines[int(line) - 1].strip() == 'print("not interrupted")'


def test_an_interrupt_inside_torchs_python_code_is_raised_after_it_returns(tmp_path):
    # os.kill is called by torch's tree_map (a built-in called from torch's Python code), so the
    # handler runs in a torch frame; the map goes on to its end.
    out = run_script(tmp_path, """
        import functools
        import torch.utils._pytree as pytree
        mapped = None
        try:
            mapped = pytree.tree_map(functools.partial(os.kill, os.getpid()), [signal.SIGINT, 0, 0])
            print("not interrupted")
        except KeyboardInterrupt:
            print(mapped)
        sys.stdout.flush(); os._exit(0)
        """)
    assert out == "[None, None, None]"


def test_an_interrupt_in_the_programs_own_code_is_raised_there_at_once(tmp_path):
    out = run_script(tmp_path, """
        reached = []
        try:
            os.kill(os.getpid(), signal.SIGINT)
            reached.append("after kill")
        except KeyboardInterrupt:
            print(reached)
        sys.stdout.flush(); os._exit(0)
        """)
    assert out == "[]"
