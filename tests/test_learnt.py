"""`kneeai train mrnet` says plainly when a model learnt nothing (issue 21): a model that was not trained (one epoch at a learning rate of 1e-12) gets
the warning, in the report and on the command line; a small model trained as the demo trains (`small_cnn` from random
weights) gets none (on the abnormal task: with 20 tuning exams, the interval of a small model's ACL AUC can reach 0.5). Tiny data keeps this cheap: 40 exams at 32 px with large lesions and balanced labels."""
import warnings
import pytest
from kneeai.synthetic import synth_mrnet
from kneeai.metrics import NotLearntWarning
from kneeai.train import train_mrnet
from conftest import kneeai_cmd

@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return synth_mrnet(tmp_path_factory.mktemp('learnt')/'D', n_train=40, n_valid=4, size=32, seed=3, difficulty=0.,
                       prevalence={'abnormal': .7, 'acl': .45, 'meniscus': .45}, progress=False)

def test_untrained_model_warns(data, tmp_path):
    r = kneeai_cmd('train', 'mrnet', '--data', data, '--out', tmp_path/'M', '--epochs', '1', '--lr', '1e-12', '--size', 'none',
                   '--valid-pct', '0.5', '--n-boot', '50', '--device', 'cpu', '--quiet')  # the command takes 1 epoch at least: one of steps that change nothing
    assert r.returncode == 0, r.stderr[-3000:]
    assert "pretrained='auto': small_cnn starts from random weights" in r.stdout  # the default body, and why
    warning = [l for l in r.stderr.splitlines() if l.startswith('kneeai train: warning: The model seems to have learnt nothing')]
    assert len(warning) == 1 and 'Try:' in warning[0], r.stderr  # one plain line, not Python's warning with a source line
    assert '**Warning.**' in (tmp_path/'M'/'report.md').read_text()

def test_trained_model_does_not_warn(data, tmp_path):
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter('always')
        res = train_mrnet(data, tmp_path/'M', tasks=('abnormal',), size=None, epochs=8, lr=1e-2, valid_pct=.5, n_boot=50,
                          device='cpu', progress=False)
    assert res['not_learnt'] == {} and res['warning'] is None, res['not_learnt']
    assert not [w for w in ws if w.category is NotLearntWarning]
    assert 'Warning' not in (tmp_path/'M'/'report.md').read_text()
