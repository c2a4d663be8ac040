"End-to-end tests of `kneeai explain`: a tiny saved model, a synthetic exam folder, the PNGs and explain.json it writes."
import json, shutil
from pathlib import Path
from types import SimpleNamespace
import numpy as np, pytest

from conftest import kneeai_cmd

PLANES = ('sagittal', 'coronal', 'axial')

@pytest.fixture(scope='module')
def model_and_exam(tmp_path_factory):
    "An untrained small TripleMRNet saved with `save_model`, and one synthetic exam folder (64 px)"
    import torch
    from kneeai.models import TripleMRNet
    from kneeai.learner import save_model
    from kneeai.volumes import data_config
    from kneeai.synthetic import synth_exam
    tmp = tmp_path_factory.mktemp('explain')
    torch.manual_seed(0)
    learn = SimpleNamespace(model=TripleMRNet('small_cnn', in_chans=1), thresholds={'abnormal': .5, 'acl': .4, 'meniscus': .3},
                            model_config=dict(kind='TripleMRNet', arch='small_cnn', planes=list(PLANES), n_out=3, shared=False, in_chans=1),
                            dls=SimpleNamespace(data_config=data_config()))
    save_model(learn, tmp/'model')
    ex = synth_exam(0, size=64, labels={'acl': 1}, difficulty='easy')
    exam = tmp/'exam1'; exam.mkdir()
    for p in PLANES: np.save(exam/f'{p}.npy', ex[p])
    return tmp, tmp/'model', exam

def test_explain_writes_overlays_mosaic_and_json(model_and_exam):
    tmp,model,exam = model_and_exam
    out = tmp/'out'
    r = kneeai_cmd('explain', '--model', model, exam, '--out', out, '--task', 'acl,meniscus', '--top', '2', '--method', 'gradcampp')
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'exam1 acl: p = ' in r.stdout and 'exam1 meniscus' in r.stdout
    summary = json.loads((out/'exam1'/'explain.json').read_text())
    assert summary['method'] == 'gradcampp' and sorted(summary['tasks']) == ['acl', 'meniscus']
    assert set(summary['probs']) == {'abnormal', 'acl', 'meniscus'} and summary['thresholds']['acl'] == .4
    from PIL import Image
    for t in ('acl', 'meniscus'):
        files = sorted(f.name for f in (out/'exam1'/t).iterdir())
        assert 'mosaic.png' in files and len(files) == 1 + 2*len(PLANES)
        for p in PLANES:
            top = summary['tasks'][t]['planes'][p]['top_slices']
            assert len(top) == 2 and len(summary['tasks'][t]['planes'][p]['scores']) == len(np.load(exam/f'{p}.npy'))
            im = np.array(Image.open(out/'exam1'/t/f'{p}_top1_slice{top[0]:03d}.png'))
            assert im.shape == (64, 64, 3) and im.dtype == np.uint8
        assert Image.open(out/'exam1'/t/'mosaic.png').size[0] > 64

def test_explain_matches_predict(model_and_exam):
    "The probabilities in explain.json are those of `kneeai predict`"
    tmp,model,exam = model_and_exam
    r = kneeai_cmd('explain', '--model', model, exam, '--out', tmp/'out2', '--task', 'abnormal', '--top', '1')
    assert r.returncode == 0, r.stderr[-3000:]
    probs = json.loads((tmp/'out2'/'exam1'/'explain.json').read_text())['probs']
    pred = json.loads(kneeai_cmd('predict', '--model', model, exam).stdout)['exam1']
    assert all(abs(probs[t] - pred[t]) < 1e-4 for t in pred)

def test_explain_errors_are_one_line(model_and_exam, tmp_path):
    tmp,model,exam = model_and_exam
    bad = tmp_path/'bad'; shutil.copytree(exam, bad)
    (bad/'sagittal.npy').write_bytes(b'garbage')
    for args,what in [((bad,), 'sagittal.npy'), ((exam, '--task', 'fracture'), 'fracture'), ((tmp_path/'missing',), 'missing')]:
        r = kneeai_cmd('explain', '--model', model, *args, '--out', tmp_path/'o')
        last = r.stderr.strip().splitlines()[-1]
        assert r.returncode == 1 and 'Traceback' not in r.stderr and last.startswith('kneeai explain: error:') and what in last, r.stderr
    r = kneeai_cmd('explain', '--model', model, exam, '--out', tmp_path/'o', '--method', 'scorecam')
    assert r.returncode == 2 and 'invalid choice' in r.stderr

def test_explain_radiographs(tmp_path):
    "A radiograph model: one overlay per image for its most probable class (or the classes asked); a bad file is reported"
    import torch
    from kneeai.models import RadiographNet
    from kneeai.radiographs import radiograph_data_config
    from kneeai.synthetic_radiographs import synth_radiographs
    from kneeai.learner import save_model
    torch.manual_seed(0)
    learn = SimpleNamespace(model=RadiographNet('small_cnn', n_out=2, in_chans=1), thresholds=None,
                            model_config=dict(kind='RadiographNet', arch='small_cnn', n_out=2, in_chans=1, head='linear'),
                            dls=SimpleNamespace(data_config=radiograph_data_config(size=64)))
    save_model(learn, tmp_path/'model')
    df = synth_radiographs(tmp_path/'xr', n=1, size=128, seed=0, progress=False)
    dcm = tmp_path/'xr'/df.iloc[0, 0] if (tmp_path/'xr'/str(df.iloc[0, 0])).exists() else next((tmp_path/'xr').rglob('*.dcm'))
    r = kneeai_cmd('explain', '--model', tmp_path/'model', dcm, '--out', tmp_path/'out', '--task', '0,1')
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path/'out'/'explain.json').read_text())['images'][str(dcm)]
    assert res['classes'] == ['0', '1'] and len(res['files']) == 2 and all(Path(f).exists() for f in res['files'])
    (tmp_path/'bad.png').write_bytes(b'not a png')
    r = kneeai_cmd('explain', '--model', tmp_path/'model', dcm, tmp_path/'bad.png', '--out', tmp_path/'out2')
    assert r.returncode == 1 and 'bad.png' in r.stderr.strip().splitlines()[-1] and 'Traceback' not in r.stderr
    assert len(json.loads((tmp_path/'out2'/'explain.json').read_text())['images'][str(dcm)]['files']) == 1

def test_explain_radiographs_with_side(kl_model, xr_data, tmp_path):
    "A canonical model (#19): `--side` for a PNG, which carries none; without it, one line saying the side is unknown; a side the DICOM header contradicts is that file's error"
    from PIL import Image
    xr,df = xr_data
    png = tmp_path/'knee.png'
    Image.fromarray((np.random.default_rng(0).random((48, 40))*255).astype(np.uint8)).save(png)
    r = kneeai_cmd('explain', '--model', kl_model, png, '--out', tmp_path/'out', '--side', 'r')
    assert r.returncode == 0 and 'knee.png: ' in r.stdout, r.stderr[-3000:]
    assert len(json.loads((tmp_path/'out'/'explain.json').read_text())['images'][str(png)]['files']) == 1
    r = kneeai_cmd('explain', '--model', kl_model, png, '--out', tmp_path/'out2')
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 1 and 'Traceback' not in r.stderr and "the knee's side is unknown" in last and '--side' in last, r.stderr
    right = xr/df.file[df.laterality.eq('R').idxmax()]
    r = kneeai_cmd('explain', '--model', kl_model, right, png, '--out', tmp_path/'out3', '--side', 'L')
    assert r.returncode == 1 and 'the side given, L, contradicts the DICOM header, which says R' in r.stderr and 'Traceback' not in r.stderr, r.stderr

def test_side_is_refused_for_an_mrnet_model(model_and_exam, capsys):
    "`--side` is for radiograph models: `kneeai predict` and `kneeai explain` refuse it for an MRNet model, in one line"
    from kneeai.cli import main
    tmp,model,exam = model_and_exam
    for cmd in (['predict'], ['explain', '--out', str(tmp/'out_side')]):
        assert main([*cmd, '--model', str(model), str(exam), '--side', 'L']) == 1
        err = capsys.readouterr().err
        assert "a knee's side is for radiograph models" in err and 'Traceback' not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp/'out_side').exists()
