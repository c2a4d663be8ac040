"End-to-end test of a multi-view model: `kneeai train radiographs --study-col --view-col`, then `kneeai predict` on a study folder."
import io, json
import pandas as pd
from conftest import kneeai_cmd

FAST = ('--arch', 'small_cnn', '--size', '48', '--epochs', '1', '--bs', '4', '--n-boot', '20', '--device', 'cpu', '--seed', '0', '--no-prep', '--quiet')

def test_multiview_cli_trains_and_predicts_study_folders(tmp_path):
    from kneeai.synthetic_radiographs import synth_radiographs
    xr,out = tmp_path/'xr',tmp_path/'mv'
    synth_radiographs(xr, n=16, size=64, seed=1, fracture_rate=.5, one_view_rate=.5, progress=False)
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
