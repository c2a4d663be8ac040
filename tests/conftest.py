"""Shared helpers of the pytest tests: running the `kneeai` command as a user would.

`kneeai_cmd` runs the command's own entry point, `kneeai.cli.main`, in the test process (the same parsing, the same
error handling, the same output), because a new Python process spends about five seconds importing torch and fastai
before kneeai does anything. `kneeai_cmd(..., process=True)` runs the installed console script in a new process: the
tests that are about the process itself (exit status, what reaches the terminal) use it."""
import contextlib, io, os, signal, shutil, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest

def kneeai_exe() -> str:
    "The `kneeai` console script of this environment (`kneeai.distributed.kneeai_exe`, which `--launch` runs), or a failed test"
    from kneeai.core import KneeaiError
    from kneeai.distributed import kneeai_exe
    try: return kneeai_exe()
    except KneeaiError as e: pytest.fail(f'{e}: run `make install`')

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

# ---- Session fixtures: one synthetic set and one set of tiny untrained models per test session (#14) ----
TINY_THRESHOLDS = {'abnormal': .4, 'acl': .5, 'meniscus': .6}

@pytest.fixture(scope='session')
def mrnet_data(tmp_path_factory) -> Path:
    "A synthetic MRNet folder shared by the whole session (12 training and 2 valid exams, 32 px, seed 0): read it, never write to it"
    from kneeai.synthetic import synth_mrnet
    return synth_mrnet(tmp_path_factory.mktemp('mrnet_data')/'mrnet', n_train=12, n_valid=2, size=32, seed=0, progress=False)

@pytest.fixture(scope='session')
def xr_data(tmp_path_factory) -> tuple:
    "Synthetic DICOM radiographs shared by the session (8 images, 64 px, seed 0): (folder, labels table)"
    from kneeai.synthetic_radiographs import synth_radiographs
    root = tmp_path_factory.mktemp('xr_data')/'xr'
    return root, synth_radiographs(root, n=8, size=64, seed=0, fracture_rate=.5, progress=False)

@pytest.fixture(scope='session')
def tiny_models(mrnet_data, xr_data, tmp_path_factory) -> dict:
    """Untrained small-CNN models saved as `kneeai train` saves them, for tests of the wiring (loading, predicting, serving), not of learning:
    mrnet (32 px, thresholds TINY_THRESHOLDS), xr (fracture, 32 px), exam (a folder of the valid exam 0013), dcms (3 DICOM files)"""
    from kneeai.volumes import mrnet_dls
    from kneeai.radiographs import radiograph_dls
    from kneeai.train import mrnet_learner
    from kneeai.radiograph_train import radiograph_learner
    from kneeai.learner import save_model
    tmp = tmp_path_factory.mktemp('tiny_models')
    learn = mrnet_learner(mrnet_dls(mrnet_data, bs=4, size=32, num_workers=0, seed=0, device='cpu'), 'small_cnn', pretrained=False,
                          in_chans=1, csv_log=False, path=tmp)
    learn.thresholds = dict(TINY_THRESHOLDS)
    xr,df = xr_data
    xl = radiograph_learner(radiograph_dls(df, path=xr, size=32, bs=2, num_workers=0, device='cpu', augment=False),
                            'small_cnn', csv_log=False, path=tmp)
    (exam := tmp/'exam').mkdir()
    for p in ('sagittal', 'coronal', 'axial'): (exam/f'{p}.npy').write_bytes((mrnet_data/'valid'/p/'0013.npy').read_bytes())
    return dict(mrnet=save_model(learn, tmp/'mrnet_model'), xr=save_model(xl, tmp/'xr_model'), exam=exam,
                dcms=[xr/f for f in df.file[:3]])

@pytest.fixture(scope='session')
def kl_model(xr_data, tmp_path_factory) -> Path:
    """A canonical KL model (#19): small CNN, 32 px, one epoch on `xr_data` with made-up grades, every knee shown as a left one
    (`side_col` the table's laterality, which the DICOM headers carry too); its config has `canonical_side` 'L' (about 0.5 s)"""
    import warnings
    from kneeai.radiographs import radiograph_dls
    from kneeai.radiograph_train import radiograph_learner
    from kneeai.learner import save_model
    tmp,(xr,df) = tmp_path_factory.mktemp('kl_model'),xr_data
    dls = radiograph_dls(df.assign(kl_grade=df.schatzker % 5), path=xr, task='kl', size=32, bs=2, num_workers=0, device='cpu',
                         augment=False, side_col='laterality', seed=0)
    learn = radiograph_learner(dls, 'small_cnn', csv_log=False, path=tmp)
    with learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the metric of a two-image validation set is not a number: nothing to monitor here
        learn.fit(1, 1e-3)
    return save_model(learn, tmp/'kl_model')
