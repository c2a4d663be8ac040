"`kneeai select` end to end on the session's tiny models: the CSV written, labelled items skipped, errors as one line"
import pandas as pd
from conftest import kneeai_cmd, TINY_THRESHOLDS

def test_select_radiographs_folder(tiny_models, xr_data, tmp_path):
    xr,df = xr_data
    pd.DataFrame({'file': df.file[:3]}).to_csv(tmp_path/'done.csv', index=False)
    r = kneeai_cmd('select', '--model', tiny_models['xr'], '--pool', xr, '--n', '4', '--strategy', 'coreset',
                   '--labelled', tmp_path/'done.csv', '--out', tmp_path/'to_label.csv', '--device', 'cpu')
    assert r.returncode == 0, r.stderr
    sel = pd.read_csv(tmp_path/'to_label.csv')
    assert list(sel.columns) == ['item', 'rank', 'score', 'strategy', 'p_0', 'p_1', 'decision']
    assert len(sel) == 4 and sel['item'].is_unique and not set(sel['item']) & set(df.file[:3])
    assert set(sel['item']) <= set(df.file) and sel['rank'].tolist() == [1, 2, 3, 4]
    assert '4 of 5 unlabelled items chosen by coreset (3 already labelled)' in r.stdout

def test_select_mrnet_split(tiny_models, mrnet_data, tmp_path):
    r = kneeai_cmd('select', '--model', tiny_models['mrnet'], '--pool', mrnet_data, '--split', 'valid', '--n', '1', '--strategy', 'bald',
                   '--out', tmp_path/'exams.csv', '--device', 'cpu')
    assert r.returncode == 0, r.stderr
    sel = pd.read_csv(tmp_path/'exams.csv', dtype={'item': str})
    assert len(sel) == 1 and [c for c in sel.columns if c.startswith('p_')] == [f'p_{t}' for t in TINY_THRESHOLDS]
    assert sel['decision'].iloc[0] in {'none'} | {';'.join(t for t in TINY_THRESHOLDS if t in sel['decision'].iloc[0])}

def test_select_bad_pool_is_one_line(tiny_models, tmp_path):
    r = kneeai_cmd('select', '--model', tiny_models['xr'], '--pool', tmp_path/'missing.csv', '--out', tmp_path/'o.csv', '--device', 'cpu')
    assert r.returncode == 1 and 'Traceback' not in r.stderr
    assert r.stderr.strip() == f"kneeai select: error: {tmp_path/'missing.csv'}: no such file or folder (give image files, a folder, a CSV, or exam folders)"
    assert not (tmp_path/'o.csv').exists()

def test_select_exam_folders(tiny_models, tmp_path):
    "exam folders given one by one: each is an item named by its folder; an exam already labelled is skipped"
    (tmp_path/'pool').mkdir()
    for n in ('a', 'b', 'c'): (tmp_path/'pool'/n).symlink_to(tiny_models['exam'], target_is_directory=True)
    (tmp_path/'done.csv').write_text('item\nb\n')
    r = kneeai_cmd('select', '--model', tiny_models['mrnet'], '--pool', tmp_path/'pool', '--n', '5', '--strategy', 'least_confidence',
                   '--out', tmp_path/'o.csv', '--device', 'cpu', '--labelled', tmp_path/'done.csv')
    assert r.returncode == 0, r.stderr
    assert sorted(pd.read_csv(tmp_path/'o.csv')['item']) == ['a', 'c']
