"End-to-end tests of the installed `kneeai` command (the console script, run as a user would run it)."
import json, os, shutil
from pathlib import Path
import pytest
import kneeai

from conftest import kneeai_cmd

def test_help_lists_commands():
    r = kneeai_cmd('--help')
    assert r.returncode == 0, r.stderr
    assert 'usage: kneeai' in r.stdout and 'version' in r.stdout

def test_version():
    r = kneeai_cmd('version', process=True)  # the installed console script, in a process of its own
    assert (r.returncode, r.stdout.strip()) == (0, kneeai.__version__)
    assert kneeai_cmd('--version').stdout.strip() == f'kneeai {kneeai.__version__}'

def test_version_verbose_is_json():
    r = kneeai_cmd('version', '--verbose')
    info = json.loads(r.stdout)
    assert info['kneeai'] == kneeai.__version__ and 'torch' in info and info['cpus'] >= 1

def test_unknown_command_is_a_usage_error():
    r = kneeai_cmd('frobnicate')
    assert r.returncode == 2 and 'invalid choice' in r.stderr and 'Traceback' not in r.stderr

def test_error_is_one_line_without_traceback(tmp_path):
    r = kneeai_cmd('dicom-meta', str(tmp_path/'missing'), '--quiet', process=True)  # what reaches the terminal
    assert r.returncode == 1 and 'Traceback' not in r.stderr
    assert str(tmp_path/'missing') in r.stderr

@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    "A tiny `kneeai demo` run: synthetic MRNet data, a trained model and its report"
    out = tmp_path_factory.mktemp('demo')
    r = kneeai_cmd('demo', '--out', str(out), '--n-train', '16', '--n-valid', '6', '--epochs', '1', '--quiet', timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r.stdout

def test_demo_writes_model_and_report(demo):
    out,stdout = demo
    for t in ('abnormal', 'acl', 'meniscus'): assert t in stdout
    assert (out/'model'/'model.safetensors').exists() and (out/'model'/'config.json').exists()
    assert (out/'report.md').exists() and (out/'roc.png').exists() and (out/'history.csv').exists()

def test_predict_split_csv_and_exam_json(demo, tmp_path):
    out,_ = demo
    r = kneeai_cmd('predict', '--model', str(out/'model'), '--data', str(out/'data'), '--split', 'valid', '--csv')
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0] == 'id,abnormal,acl,meniscus' and len(lines) == 7
    exam = tmp_path/'exam1'; exam.mkdir()
    for p in ('sagittal', 'coronal', 'axial'): shutil.copy(out/'data'/'valid'/p/'0016.npy', exam/f'{p}.npy')
    r = kneeai_cmd('predict', '--model', str(out/'model'), str(exam))
    probs = json.loads(r.stdout)['exam1']
    first = dict(zip(lines[0].split(',')[1:], map(float, lines[1].split(',')[1:])))
    assert lines[1].startswith('0016,') and all(abs(probs[k] - first[k]) < 1e-4 for k in first)

def test_predict_bad_exam_is_reported_and_others_kept(demo, tmp_path):
    out,_ = demo
    good,bad = tmp_path/'good',tmp_path/'bad'
    good.mkdir(); bad.mkdir()
    for p in ('sagittal', 'coronal', 'axial'): shutil.copy(out/'data'/'valid'/p/'0017.npy', good/f'{p}.npy')
    (bad/'sagittal.npy').write_bytes(b'garbage')
    r = kneeai_cmd('predict', '--model', str(out/'model'), str(good), str(bad))
    assert r.returncode == 1 and 'Traceback' not in r.stderr and 'bad' in r.stderr
    res = json.loads(r.stdout)
    assert res['good']['acl'] is not None and res['bad']['acl'] is None and res['bad']['error']

def test_train_mrnet_command(demo, tmp_path):
    out,_ = demo
    r = kneeai_cmd('train', 'mrnet', '--data', str(out/'data'), '--out', str(tmp_path/'run'), '--epochs', '1', '--bs', '4',
                   '--valid-pct', '0.4', '--tasks', 'abnormal,acl', '--device', 'cpu', timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = json.loads((tmp_path/'run'/'model'/'config.json').read_text())
    assert cfg['data']['tasks'] == ['abnormal', 'acl'] and set(cfg['thresholds']) == {'abnormal', 'acl'}

def test_untrusted_pickle_refused(tmp_path):
    (tmp_path/'export.pkl').write_bytes(b'\x80\x04K\x01.')
    r = kneeai_cmd('predict', '--model', str(tmp_path), '--data', str(tmp_path))
    assert r.returncode == 1 and 'arbitrary code' in r.stderr

def test_dicom_meta_error_names_the_files(tmp_path):
    "Several files, none DICOM: the error names them as the user typed them, not as a Python list of Path objects"
    for n in ('a.dcm', 'b.dcm'): (tmp_path/n).write_bytes(b'not DICOM')
    r = kneeai_cmd('dicom-meta', tmp_path/'a.dcm', tmp_path/'b.dcm', '--quiet', '--out', tmp_path/'meta.csv')
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 1 and 'Path(' not in last and '[' not in last
    assert last == f"kneeai dicom-meta: error: {tmp_path/'a.dcm'}, {tmp_path/'b.dcm'}: no file could be read as DICOM"

def test_app_passes_streamlit_options_and_refuses_typos(tmp_path, monkeypatch):
    "Streamlit's `--section.name` options go to `streamlit run`; an option neither kneeai nor Streamlit has is a usage error"
    from kneeai.cli import main
    calls = []
    monkeypatch.setattr(os, 'execve', lambda path, cmd, env: calls.append(cmd))  # `kneeai app` becomes the server
    assert main(['app', '--model', str(tmp_path), '--server.port', '8502', '--server.headless=true', '--max-upload-mb', '5']) == 0
    cmd = calls[-1]
    assert cmd[cmd.index('run') + 2:cmd.index('--')] == ['--server.port', '8502', '--server.headless=true', '--server.maxUploadSize', '5']
    assert cmd[cmd.index('--') + 1:] == ['--model', str(tmp_path.resolve()), '--max-upload-mb', '5']
    with pytest.raises(SystemExit) as e: main(['app', '--model', str(tmp_path), '--modle', 'x'])
    assert e.value.code == 2 and len(calls) == 1  # not started
    r = kneeai_cmd('app', '--trust_pickle')
    assert r.returncode == 2 and 'unrecognized arguments: --trust_pickle' in r.stderr

def test_app_help_shows_the_apps_options():
    from kneeai.cli import MAX_UPLOAD_MB
    r = kneeai_cmd('app', '--help')
    assert r.returncode == 0
    for o in ('--model', '--trust-pickle', '--max-upload-mb', f'(default: {MAX_UPLOAD_MB})', '--server.port'): assert o in r.stdout, o

def test_train_prints_one_line_per_epoch(tmp_path):
    "Standard output is a pipe here: each epoch is one plain line, no progress bar redrawn with carriage returns"
    r = kneeai_cmd('synth', 'mrnet', tmp_path/'D', '--n-train', '12', '--n-valid', '4', '--size', '32', '--quiet')
    assert r.returncode == 0, r.stderr
    r = kneeai_cmd('train', 'mrnet', '--data', tmp_path/'D', '--out', tmp_path/'run', '--arch', 'small_cnn', '--epochs', '2',
                   '--bs', '4', '--n-boot', '20', '--device', 'cpu', '--workers', '0', timeout=600, process=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert '\r' not in r.stdout and '\r' not in r.stderr
    epochs = [l for l in r.stdout.splitlines() if l.startswith('epoch ')]
    assert [l.split()[1] for l in epochs] == ['1/2', '2/2'] and all('train_loss' in l and 'valid_loss' in l for l in epochs)
    r = kneeai_cmd('train', 'mrnet', '--data', tmp_path/'D', '--out', tmp_path/'run2', '--arch', 'small_cnn', '--epochs', '1',
                   '--bs', '4', '--n-boot', '20', '--device', 'cpu', '--workers', '0', '--quiet', timeout=600)
    assert r.returncode == 0 and not [l for l in r.stdout.splitlines() if l.startswith('epoch ')]
