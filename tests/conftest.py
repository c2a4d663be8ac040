"Shared helpers of the pytest tests: running the installed `kneeai` command as a user would."
import shutil, subprocess, sys
from pathlib import Path
import pytest

def _kneeai() -> str:
    "The `kneeai` console script of this environment"
    exe = Path(sys.executable).parent/'kneeai'
    if exe.exists(): return str(exe)
    found = shutil.which('kneeai')
    if not found: pytest.fail('the kneeai console script is not installed: run `make install`')
    return found

def kneeai_cmd(*args, timeout=300, **kw) -> subprocess.CompletedProcess:
    "Run `kneeai ARGS...` (arguments may be paths), capturing its output as text"
    return subprocess.run([_kneeai(), *map(str, args)], capture_output=True, text=True, timeout=timeout, **kw)
