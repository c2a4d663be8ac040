"End-to-end test of a multi-view model: `kneeai train radiographs --study-col --view-col`, then `kneeai predict` on a study folder."
import io, json
import pandas as pd
from conftest import kneeai_cmd

FAST = ('--arch', 'small_cnn', '--size', '48', '--epochs', '1', '--bs', '4', '--n-boot', '20', '--device', 'cpu', '--seed', '0', '--no-prep', '--quiet')

def test_multiview_cli_trains_and_predicts_study_folders(tmp_path):
    from kneeai.synthetic_radiographs import synth_radiographs
    xr,out = tmp_path/'xr',tmp_path/'mv'
    synth_radiographs(xr, n=16, size=64, seed=1, fracture_rate=.5, one_view_rate=.5, transfer_syntaxes={'explicit': 1}, progress=False)
    r = kneeai_cmd('train', 'radiographs', '--data', xr/'labels.csv', '--study-col', 'study_id', '--view-col', 'view', '--out', out, *FAST)
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = json.loads((out/'model'/'config.json').read_text())
    assert (cfg['model']['kind'], cfg['model']['views'], cfg['data']['views']) == ('MultiViewNet', ['AP', 'LAT'], ['AP', 'LAT'])
    tp = pd.read_csv(out/'test_predictions.csv').set_index('study_id')   # one row per test study
    folders = [next(xr.glob(f'*/{s}')) for s in tp.index]                 # <patient>/<study>/IMnnnn.dcm: views from ViewPosition
    r = kneeai_cmd('predict', '--model', out/'model', *folders, '--csv')
    assert r.returncode == 0, r.stderr[-3000:]
    pr = pd.read_csv(io.StringIO(r.stdout), index_col=0)
    assert list(pr.index) == list(tp.index)
    assert (pr[['0', '1']] - tp[['0', '1']]).abs().to_numpy().max() < 1e-3   # the recipe's test predictions (16-bit image cache)
    r = kneeai_cmd('train', 'radiographs', '--data', xr/'labels.csv', '--view-col', 'view', '--out', tmp_path/'x', *FAST)
    assert r.returncode == 1 and 'needs --study-col' in r.stderr

def test_app_shows_a_heatmap_per_view(tmp_path, monkeypatch):
    "The web app with a multi-view model: the uploads are one study, its probabilities as `predict_studies` gives them, one map per view"
    import sys
    pytest = __import__('pytest'); pytest.importorskip('streamlit.testing.v1')
    from streamlit.testing.v1 import AppTest
    import kneeai.app
    from kneeai.synthetic_radiographs import synth_radiographs
    from kneeai.multiview import multiview_learner, multiview_dls, study_table
    from kneeai.learner import save_model, predict_studies
    from kneeai.dicom import read_dicom
    df = synth_radiographs(tmp_path/'xr', n=8, size=64, seed=3, fracture_rate=.5, transfer_syntaxes={'explicit': 1}, progress=False)
    save_model(multiview_learner(multiview_dls(study_table(df), tmp_path/'xr', size=32, prep=False, bs=2, device='cpu'), 'small_cnn',
                                 path=tmp_path, csv_log=False), tmp_path/'model')
    study = df[df.study_id == df.study_id.iloc[0]]
    files = [tmp_path/'xr'/f for f in study.file]
    monkeypatch.setattr(sys, 'argv', ['app.py', '--model', str(tmp_path/'model')])
    at = AppTest.from_file(kneeai.app.__file__, default_timeout=180).run()
    at.file_uploader[0].set_value([(f.name, f.read_bytes(), 'application/dicom') for f in files]).run()
    assert not at.exception and not [e.value for e in at.error], (at.exception, [e.value for e in at.error])
    shown = at.main.table[0].value.reset_index().set_index('task').probability.astype(float)
    ref = predict_studies(tmp_path/'model', [files], device='cpu').iloc[0]
    assert abs(shown['fracture'] - ref['1']) <= 6e-5
    views = [read_dicom(f).ViewPosition for f in files]
    assert [img.captions[0].split(' · ')[0] for img in at.main.image] == views   # one map per image, captioned with its view
