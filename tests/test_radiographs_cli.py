"End-to-end tests of `kneeai train radiographs` and `kneeai predict` on radiographs, run as a user would run them."
import json
from pathlib import Path
import numpy as np, pandas as pd
import pytest
from PIL import Image

from conftest import kneeai_cmd

FAST = ('--arch', 'small_cnn', '--size', '48', '--epochs', '1', '--bs', '8', '--n-boot', '50', '--device', 'cpu', '--seed', '0')

@pytest.fixture(scope='module')
def xr(tmp_path_factory):
    "24 synthetic DICOM radiographs with labels.csv, written by `kneeai synth radiographs`"
    d = tmp_path_factory.mktemp('xr')/'xr'
    r = kneeai_cmd('synth', 'radiographs', d, '--n', '24', '--size', '96', '--fracture-rate', '0.4', '--quiet')
    assert r.returncode == 0, r.stderr
    return d

@pytest.fixture(scope='module')
def trained(xr, tmp_path_factory):
    "A fracture model trained for one epoch by `kneeai train radiographs`"
    out = tmp_path_factory.mktemp('fracture')
    r = kneeai_cmd('train', 'radiographs', '--data', xr/'labels.csv', '--task', 'fracture', '--out', out, *FAST)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r.stdout, r.stderr

def test_train_writes_model_and_report(trained):
    out,stdout,_ = trained
    assert 'auc' in stdout and 'balanced_accuracy' in stdout
    for f in ('model/model.safetensors', 'model/config.json', 'report.md', 'report.csv', 'confusion.png', 'history.csv', 'test_predictions.csv'):
        assert (out/f).exists(), f
    cfg = json.loads((out/'model'/'config.json').read_text())
    assert cfg['model']['kind'] == 'RadiographNet' and cfg['data']['task'] == 'fracture' and cfg['data']['classes'] == [0, 1]

def test_not_learnt_is_one_plain_line(trained):
    "One epoch on 24 images learns nothing: said once on standard error, as the MRNet command says it, not as Python's warning"
    _,_,stderr = trained
    said = [l for l in stderr.splitlines() if 'learnt nothing' in l]
    assert len(said) == 1 and said[0].startswith('kneeai train: warning: The model seems to have learnt nothing'), stderr[-2000:]
    assert 'NotLearntWarning' not in stderr

def test_predict_dicom_files_json_and_csv(trained, xr):
    out,*_ = trained
    files = sorted(xr.rglob('*.dcm'))[:3]
    r = kneeai_cmd('predict', '--model', out/'model', *files)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert list(res) == [str(f) for f in files]
    for v in res.values(): assert set(v) == {'0', '1'} and abs(v['0'] + v['1'] - 1) < 1e-5
    r = kneeai_cmd('predict', '--model', out/'model', '--csv', *files)
    df = pd.read_csv(pd.io.common.StringIO(r.stdout), index_col=0)
    assert df.shape == (3, 2)
    assert np.allclose(df.to_numpy(), [[res[str(f)]['0'], res[str(f)]['1']] for f in files], atol=1e-5)

def test_predict_matches_test_predictions(trained, xr):
    "The command gives the probabilities the recipe wrote for its test images"
    out,*_ = trained
    tp = pd.read_csv(out/'test_predictions.csv')
    r = kneeai_cmd('predict', '--model', out/'model', '--csv', *[xr/f for f in tp.file])
    df = pd.read_csv(pd.io.common.StringIO(r.stdout), index_col=0)
    assert np.allclose(df[['0', '1']].to_numpy(), tp[['0', '1']].to_numpy(), atol=1e-3)

def test_predict_png_and_unreadable_file(trained, xr, tmp_path):
    out,*_ = trained
    r = kneeai_cmd('preprocess', xr, tmp_path/'png', '--size', '64', '--workers', '0', '--quiet')
    assert r.returncode == 0, r.stderr
    png = sorted((tmp_path/'png').rglob('*.png'))[0]
    bad = tmp_path/'bad.dcm'; bad.write_bytes(b'not a dicom file')
    r = kneeai_cmd('predict', '--model', out/'model', png, bad)
    assert r.returncode == 1 and 'Traceback' not in r.stderr
    res = json.loads(r.stdout)
    assert 0 <= res[str(png)]['1'] <= 1 and res[str(bad)]['error'] and str(bad) in r.stderr

def test_predict_rejects_data_split_for_radiograph_model(trained, xr):
    out,*_ = trained
    r = kneeai_cmd('predict', '--model', out/'model', '--data', xr)
    assert r.returncode == 1 and 'DICOM or image files' in r.stderr and 'Traceback' not in r.stderr

def test_train_kl_layout_png(xr, tmp_path):
    "A labels.csv in the knee-KL layout (path,kl_grade,patient_id,side; 8-bit PNGs under images/<grade>/) trains with --task kl"
    lab = pd.read_csv(xr/'labels.csv')
    rows = []
    for i,r in lab.iterrows():
        g = i % 5
        p = Path('images')/str(g)/f"{r.patient_id}{'LR'[i % 2]}{i}.png"
        (tmp_path/p).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.random.default_rng(i).random((64, 64))*255).astype(np.uint8)).save(tmp_path/p)
        rows.append(dict(path=str(p), kl_grade=g, patient_id=r.patient_id, side='LR'[i % 2]))
    pd.DataFrame(rows).to_csv(tmp_path/'labels.csv', index=False)
    out = tmp_path/'kl'
    r = kneeai_cmd('train', 'radiographs', '--data', tmp_path/'labels.csv', '--task', 'kl', '--loss', 'coral', '--out', out, *FAST)
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = json.loads((out/'model'/'config.json').read_text())
    assert cfg['data']['classes'] == [0, 1, 2, 3, 4] and cfg['model']['head'] == 'coral' and cfg['data']['fn_col'] == 'path'
    assert cfg['data']['canonical_side'] == 'L'   # the KL recipe: every knee shown as a left one (its side column)
    r = kneeai_cmd('predict', '--model', out/'model', tmp_path/rows[0]['path'])   # a PNG has no laterality: refused, not guessed
    assert r.returncode == 1 and "side is unknown" in r.stderr and '--side' in r.stderr and 'Traceback' not in r.stderr
    r = kneeai_cmd('predict', '--model', out/'model', tmp_path/rows[0]['path'], '--side', rows[0]['side'])
    res = json.loads(r.stdout)[str(tmp_path/rows[0]['path'])]
    assert set(res) == {'0', '1', '2', '3', '4'} and abs(sum(res.values()) - 1) < 1e-5

def test_train_errors_are_one_line(xr, tmp_path):
    r = kneeai_cmd('train', 'radiographs', '--data', xr/'labels.csv', '--task', 'kl', '--out', tmp_path/'x', *FAST)
    assert r.returncode == 1 and 'kl_grade' in r.stderr and 'Traceback' not in r.stderr
    r = kneeai_cmd('train', 'radiographs', '--data', tmp_path/'missing.csv', '--out', tmp_path/'x', *FAST)
    assert r.returncode == 1 and 'no such labels file' in r.stderr
    r = kneeai_cmd('train', 'radiographs', '--data', xr/'labels.csv', '--task', 'knee', '--out', tmp_path/'x')
    assert r.returncode == 2 and 'invalid choice' in r.stderr
