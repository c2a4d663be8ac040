"""Shared helpers of the pytest tests: running the `kneeai` command as a user would.

`kneeai_cmd` runs the command's own entry point, `kneeai.cli.main`, in the test process (the same parsing, the same
error handling, the same output), because a new Python process spends about five seconds importing torch and fastai
before kneeai does anything. `kneeai_cmd(..., process=True)` runs the installed console script in a new process: the
tests that are about the process itself (exit status, what reaches the terminal) use it."""
import contextlib, io, shutil, subprocess, sys
from pathlib import Path
import pytest

def _kneeai() -> str:
    "The `kneeai` console script of this environment"
    exe = Path(sys.executable).parent/'kneeai'
    if exe.exists(): return str(exe)
    found = shutil.which('kneeai')
    if not found: pytest.fail('the kneeai console script is not installed: run `make install`')
    return found

def _exit_status(e:SystemExit, err) -> int:
    "What the interpreter makes of `SystemExit(code)`: None is 0, an int itself, anything else printed and 1"
    if e.code is None or isinstance(e.code, int): return e.code or 0
    print(e.code, file=err)
    return 1

def kneeai_cmd(*args, timeout=300, process:bool=False, **kw) -> subprocess.CompletedProcess:
    "Run `kneeai ARGS...` (arguments may be paths), capturing its output as text; in this process unless `process`"
    argv = [str(a) for a in args]
    if process or kw: return subprocess.run([_kneeai(), *argv], capture_output=True, text=True, timeout=timeout, **kw)
    from kneeai.cli import main
    out,err = io.StringIO(),io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: rc = main(argv) or 0
        except SystemExit as e: rc = _exit_status(e, err)
    return subprocess.CompletedProcess([_kneeai(), *argv], rc, out.getvalue(), err.getvalue())
