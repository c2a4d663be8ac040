"""Failures that must say so (issue 13, section 3): batch commands exit non-zero when a file failed, unusable images
and model configs are errors naming the file, arguments that make no sense are refused with a message, and a killed
`kneeai preprocess` leaves no worker processes behind. Each test failed before its fix."""
import errno, json, os, shutil, signal, subprocess, sys, time
from pathlib import Path
import numpy as np, pandas as pd, pytest
from PIL import Image
from conftest import kneeai_cmd, kneeai_exe

@pytest.fixture(scope='module')
def radiographs(tmp_path_factory):
    "Four small synthetic DICOM radiographs (no labels.csv)"
    from kneeai.synthetic_radiographs import synth_radiographs
    d = tmp_path_factory.mktemp('xr')
    synth_radiographs(d, n=4, size=64, seed=0, progress=False)
    (d/'labels.csv').unlink()
    return d

@pytest.fixture(scope='module')
def xr_model(tmp_path_factory):
    "An untrained radiograph model folder (small_cnn, 32 px), saved as `save_model` writes it"
    from kneeai.models import model_from_config, save_weights
    from kneeai.radiographs import radiograph_data_config
    from kneeai.learner import CONFIG_NAME, WEIGHTS_NAME
    d = tmp_path_factory.mktemp('xr_model')
    m = dict(kind='RadiographNet', arch='small_cnn', n_out=2, in_chans=1, head='linear', dropout=0.)
    save_weights(model_from_config(m), d/WEIGHTS_NAME)
    (d/CONFIG_NAME).write_text(json.dumps(dict(model=m, data=radiograph_data_config(size=32), thresholds=None)))
    return d

def test_preprocess_full_disk(radiographs, tmp_path, monkeypatch):
    "Files that could not be written (a full disk) make the exit status 1; summary and manifest as before; outputs honour the umask"
    import kneeai.preprocess as kp
    real,calls = kp.save_image,[]
    def every_other_fails(x, fn):
        calls.append(fn)
        if len(calls) % 2 == 0: raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(fn))
        return real(x, fn)
    monkeypatch.setattr(kp, 'save_image', every_other_fails)
    old = os.umask(0o022)
    try: r = kneeai_cmd('preprocess', radiographs, tmp_path/'out', '--size', '32', '--workers', '0', '-q')
    finally: os.umask(old)
    assert r.returncode == 1, r.stdout + r.stderr
    assert '2 ok' in r.stdout and '2 failed' in r.stdout and '2 of 4 files failed' in r.stderr
    m = pd.read_csv(tmp_path/'out'/'manifest.csv')
    assert len(m) == 4 and m.reason[m.status == 'failed'].str.contains('No space left on device').all()
    for fn in (tmp_path/'out'/m.output[m.status == 'ok'].iloc[0], tmp_path/'out'/'manifest.csv'):
        assert fn.stat().st_mode & 0o777 == 0o644, oct(fn.stat().st_mode)  # was 0600 whatever the umask

def test_preprocess_unwritable_and_inside_source(radiographs, tmp_path, monkeypatch):
    "A destination that cannot be written, or one inside the source folder, is a one-line error, and the source is untouched"
    import kneeai.preprocess as kp
    def denied(fn, *a, **k): raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(fn))
    with monkeypatch.context() as mp:
        mp.setattr(kp, 'atomic_write', denied)
        r = kneeai_cmd('preprocess', radiographs, tmp_path/'ro', '-q')
    assert r.returncode == 1 and 'Permission denied' in r.stderr and 'Traceback' not in r.stderr, r.stderr
    before = sorted(p.name for p in radiographs.rglob('*'))
    for dest in (radiographs, radiographs/'out'):
        r = kneeai_cmd('preprocess', radiographs, dest, '-q')
        assert r.returncode == 1 and 'inside the source folder' in r.stderr, r.stderr
    assert sorted(p.name for p in radiographs.rglob('*')) == before

def test_dicom_meta_some_unreadable(radiographs, tmp_path):
    "dicom-meta writes its CSV and exits 1 when some files could not be read (0 before, unless none could)"
    src = tmp_path/'src'; shutil.copytree(radiographs, src)
    (src/'junk.dcm').write_bytes(b'not DICOM')
    r = kneeai_cmd('dicom-meta', src, '-o', tmp_path/'meta.csv', '-q')
    assert r.returncode == 1 and '1 of 5 files could not be read' in r.stderr, r.stderr
    assert len(pd.read_csv(tmp_path/'meta.csv')) == 5

def test_predict_too_small_image(xr_model, tmp_path):
    "A 1x1 PNG is an error naming the file (it was given a class), and the command exits 1"
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(tmp_path/'dot.png')
    Image.fromarray((np.random.default_rng(0).random((48, 48))*255).astype(np.uint8)).save(tmp_path/'ok.png')
    r = kneeai_cmd('predict', '--model', xr_model, tmp_path/'dot.png', tmp_path/'ok.png')
    assert r.returncode == 1, r.stdout
    res = json.loads(r.stdout)
    assert 'too small' in res[str(tmp_path/'dot.png')]['error'] and res[str(tmp_path/'dot.png')]['0'] is None
    assert res[str(tmp_path/'ok.png')]['error'] is None and 0 <= res[str(tmp_path/'ok.png')]['0'] <= 1

@pytest.mark.parametrize('part,key,value,msg', [
    ('data', 'size', 100000, 'data.size is 100000: expected an integer from 16 to'),
    ('data', 'classes', None, 'data.classes is missing'),
    ('model', 'n_out', '2', 'model.n_out is "2": expected an integer'),
    ('model', 'kind', 'Mystery', "model.kind 'Mystery' is not a model kind"),
    ('data', 'mean', ['x'], 'data.mean is ["x"]'),
])
def test_config_checked_on_load(xr_model, tmp_path, part, key, value, msg):
    "config.json is checked before anything is built: a ModelError naming the file and the key (size 100000 was allocated at predict)"
    from kneeai.core import ModelError
    from kneeai.learner import Predictor
    m = tmp_path/'m'; shutil.copytree(xr_model, m)
    cfg = json.loads((m/'config.json').read_text())
    if value is None: del cfg[part][key]
    else: cfg[part][key] = value
    (m/'config.json').write_text(json.dumps(cfg))
    with pytest.raises(ModelError) as e: Predictor.load(m, 'cpu')
    assert str(e.value).startswith(f'{m/"config.json"}: ') and msg in str(e.value), str(e.value)

@pytest.mark.parametrize('argv,msg', [
    (['train', 'radiographs', '--data', 'l.csv', '--out', 'o', '--bs', '0'], 'argument --bs: 0 is not a whole number at least 1'),
    (['train', 'radiographs', '--data', 'l.csv', '--out', 'o', '--size', '2'], 'argument --size: 2 is not a whole number at least 16'),
    (['train', 'mrnet', '--data', 'd', '--out', 'o', '--epochs', '0'], 'argument --epochs: 0 is not a whole number at least 1'),
    (['preprocess', 's', 'd', '--workers', '-1'], 'argument --workers: -1 is not a whole number at least 0'),
    (['train', 'mrnet', '--data', 'd', '--out', '{file}'], 'exists and is not a folder'),
])
def test_arguments_refused(tmp_path, argv, msg):
    "Numbers that make no sense and an --out that is a file are refused by the parser with a message (tracebacks, or an untrained model, before)"
    (tmp_path/'f').write_text('')
    r = kneeai_cmd(*[a.replace('{file}', str(tmp_path/'f')) for a in argv])
    assert r.returncode == 2 and msg in r.stderr and 'Traceback' not in r.stderr, r.stderr

def test_volume_too_small(tmp_path):
    "An 8x8 MRNet volume is a one-line error, not torch's traceback"
    from kneeai.models import model_from_config, save_weights
    from kneeai.volumes import data_config
    m = dict(kind='TripleMRNet', arch='small_cnn', planes=['sagittal', 'coronal', 'axial'], n_out=3, in_chans=1)
    save_weights(model_from_config(m), tmp_path/'m'/'model.safetensors')
    (tmp_path/'m'/'config.json').write_text(json.dumps(dict(model=m, data=data_config(), thresholds=None)))
    (tmp_path/'exam').mkdir()
    for p in m['planes']: np.save(tmp_path/'exam'/f'{p}.npy', np.random.default_rng(0).integers(0, 255, (3, 8, 8), dtype=np.uint8))
    r = kneeai_cmd('predict', '--model', tmp_path/'m', tmp_path/'exam')
    assert r.returncode == 1 and 'too small for this network' in r.stderr and 'Traceback' not in r.stderr, r.stderr

def test_labels_without_rows(tmp_path):
    "A labels CSV with a header and no rows is a one-line error"
    (tmp_path/'labels.csv').write_text('file,fracture,patient_id\n')
    r = kneeai_cmd('train', 'radiographs', '--data', tmp_path/'labels.csv', '--out', tmp_path/'o', '--arch', 'small_cnn', '-q')
    assert r.returncode == 1 and 'the labels table has no rows' in r.stderr and 'Traceback' not in r.stderr, r.stderr

def _children(pid:int) -> list:
    "Process ids whose parent is `pid` (Linux /proc)"
    kids = []
    for st in Path('/proc').glob('[0-9]*/stat'):
        try: fields = st.read_text().rsplit(')', 1)[1].split()
        except OSError: continue
        if int(fields[1]) == pid: kids.append(int(st.parent.name))
    return kids

def _alive(pid:int) -> bool:
    "Whether `pid` runs (an ended process not reaped yet, a zombie, counts as ended)"
    try: return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError: return False

@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='reads /proc')
def test_sigkill_leaves_no_workers(radiographs, tmp_path):
    "`kneeai preprocess --workers 2` killed with SIGKILL mid-run: its workers end within seconds (they stayed, ~460 MB each); no jit warning"
    src = tmp_path/'src'; src.mkdir()
    one = next(radiographs.rglob('*.dcm'))
    for i in range(400): os.link(one, src/f'IM{i:04d}.dcm')
    with open(tmp_path/'err.txt', 'w') as err: # a file, not a pipe: workers that outlive the command would hold a pipe open
        proc = subprocess.Popen([kneeai_exe(), 'preprocess', str(src), str(tmp_path/'out'), '--workers', '2', '--size', '32', '-q'],
                                stdout=subprocess.DEVNULL, stderr=err)
    kids,t0 = [],time.time()
    try:
        while len(kids) < 2 and time.time() - t0 < 120:
            if proc.poll() is not None: pytest.fail(f"kneeai preprocess ended before it was killed: {(tmp_path/'err.txt').read_text()}")
            time.sleep(.05); kids = _children(proc.pid)
        assert len(kids) >= 2, 'no worker processes appeared'
        proc.kill(); proc.wait(30)
        t1 = time.time()
        while any(map(_alive, kids)) and time.time() - t1 < 5: time.sleep(.05)
        assert not any(map(_alive, kids)), f'workers {[k for k in kids if _alive(k)]} outlived their parent'
        assert 'torch.jit.script' not in (tmp_path/'err.txt').read_text()
    finally:
        if proc.poll() is None: proc.kill()
        for k in kids:
            if _alive(k): os.kill(k, signal.SIGKILL)
