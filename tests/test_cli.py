"End-to-end tests of the installed `kneeai` command (the console script, run as a user would run it)."
import json, shutil, subprocess, sys
from pathlib import Path
import pytest
import kneeai

def _kneeai():
    exe = Path(sys.executable).parent/'kneeai'
    if exe.exists(): return str(exe)
    found = shutil.which('kneeai')
    if not found: pytest.fail('the kneeai console script is not installed: run `make install`')
    return found

def kneeai_cmd(*args, **kw):
    return subprocess.run([_kneeai(), *args], capture_output=True, text=True, timeout=120, **kw)

def test_help_lists_commands():
    r = kneeai_cmd('--help')
    assert r.returncode == 0, r.stderr
    assert 'usage: kneeai' in r.stdout and 'version' in r.stdout

def test_version():
    r = kneeai_cmd('version')
    assert (r.returncode, r.stdout.strip()) == (0, kneeai.__version__)
    assert kneeai_cmd('--version').stdout.strip() == f'kneeai {kneeai.__version__}'

def test_version_verbose_is_json():
    r = kneeai_cmd('version', '--verbose')
    info = json.loads(r.stdout)
    assert info['kneeai'] == kneeai.__version__ and 'torch' in info and info['cpus'] >= 1

def test_unknown_command_is_a_usage_error():
    r = kneeai_cmd('frobnicate')
    assert r.returncode == 2 and 'invalid choice' in r.stderr and 'Traceback' not in r.stderr
