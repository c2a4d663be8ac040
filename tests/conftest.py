"""Shared helpers of the pytest tests: running the `kneeai` command as a user would.

`kneeai_cmd` runs the command's own entry point, `kneeai.cli.main`, in the test process (the same parsing, the same
error handling, the same output), because a new Python process spends about five seconds importing torch and fastai
before kneeai does anything. `kneeai_cmd(..., process=True)` runs the installed console script in a new process: the
tests that are about the process itself (exit status, what reaches the terminal) use it."""
import contextlib, io, os, signal, shutil, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest

def kneeai_exe() -> str:
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
    if process or kw: return subprocess.run([kneeai_exe(), *argv], capture_output=True, text=True, timeout=timeout, **kw)
    from kneeai.cli import main
    out,err = io.StringIO(),io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: rc = main(argv) or 0
        except SystemExit as e: rc = _exit_status(e, err)
    return subprocess.CompletedProcess([kneeai_exe(), *argv], rc, out.getvalue(), err.getvalue())

def free_port() -> int:
    "A TCP port nothing listens on now, for a server under test"
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

def wait_healthy(url:str, proc, log:Path, timeout:float=120):
    "Wait until the Streamlit server at `url` (started as `proc`, writing `log`) answers its health check; fail with its log if not"
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None: pytest.fail(f'`kneeai app` exited with status {proc.returncode}:\n{log.read_text()[-3000:]}')
        try:
            with urllib.request.urlopen(f'{url}/_stcore/health', timeout=2) as r:
                if r.read().strip() == b'ok': return
        except OSError: time.sleep(0.3)
    pytest.fail(f'the app did not answer within {timeout} s:\n{log.read_text()[-3000:]}')

@contextlib.contextmanager
def app_server(model:Path, tmp:Path):
    "`kneeai app --model MODEL` on a free port in a session of its own, healthy; yields (url, process); stopped at the end"
    port,log = free_port(),tmp/'server.log'
    cmd = [kneeai_exe(), 'app', '--model', str(model), '--server.port', str(port), '--server.address', '127.0.0.1',
           '--server.headless', 'true', '--server.fileWatcherType', 'none', '--browser.serverAddress', '127.0.0.1',
           '--browser.gatherUsageStats', 'false']
    with open(log, 'w') as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, 'KNEEAI_HOME': str(tmp/'home')})
    url = f'http://127.0.0.1:{port}'
    try:
        wait_healthy(url, proc, log)
        yield url, proc
    finally:
        if proc.poll() is None: os.killpg(proc.pid, signal.SIGTERM)  # `kneeai app` and anything the server started
        try: proc.wait(20)
        except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL)
