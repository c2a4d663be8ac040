"""`bench/gpu_check.py --device cpu --quick` runs end to end on a CPU and writes its JSON and Markdown table: the day a GPU
machine is lent, the same script measures it. Also the regression of issue 14: with fewer training exams than `--bs`,
`bench/mrnet_train.py` reported 0.00 exams/s (it counted exams with the requested batch size, not the one used)."""
import json, sys
from pathlib import Path
import pytest

BENCH = Path(__file__).resolve().parents[1]/'bench'

@pytest.fixture(scope='module')
def quick(tmp_path_factory):
    sys.path.insert(0, str(BENCH))
    try:
        import gpu_check
        out = tmp_path_factory.mktemp('gpu_check')
        gpu_check.main(['--device', 'cpu', '--quick', '--out', str(out)])
    finally: sys.path.remove(str(BENCH))
    return out

def test_json_and_table_written(quick):
    res = json.loads((quick/'gpu_check.json').read_text())
    assert res['device'] == 'cpu' and res['quick'] and res['notebooks'] == {'skipped': '--quick'}
    errors = {k: v['error'] for k,v in res.items() if isinstance(v, dict) and 'error' in v}
    assert not errors, errors
    table = (quick/'gpu_check.md').read_text()
    assert table.startswith('| check | result |') and 'exams/s' in table

def test_every_part_measured_something(quick):
    res = json.loads((quick/'gpu_check.json').read_text())
    v = res['mrnet_train']['variants']
    assert set(v) == {'kneeai auto', 'reference'}
    # 3 training exams with --bs 4: the batch size is capped at 3, and both sides count the exams they trained on (was 0.00)
    assert all(d['exams'] == 3 and d['exams_per_s'] > 0 and d['slices_per_s'] > 0 and d['gflops'] > 0 for d in v.values())
    assert res['mrnet_train']['bs'] == 3 and res['mrnet_train']['auto_choice'] in ('float32', 'bfloat16')
    assert res['loading']['kneeai_exams_per_s'] > 0 and res['loading']['reference_exams_per_s'] > 0
    assert res['inference']['ms_per_exam_median'] > 0 and res['radiographs']['images_per_s'] > 0
