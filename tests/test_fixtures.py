"""The session fixtures of conftest.py that other tests share (one synthetic set, tiny saved models) give what they promise."""
from kneeai.learner import Predictor
from conftest import TINY_THRESHOLDS

def test_tiny_models_load_and_predict(tiny_models):
    p = Predictor.load(tiny_models['mrnet'], 'cpu')
    assert p.thresholds == TINY_THRESHOLDS
    res = p.predict_exams([tiny_models['exam']])
    assert res.shape[0] == 1 and ((res.values >= 0) & (res.values <= 1)).all()
    x = Predictor.load(tiny_models['xr'], 'cpu').predict_images(tiny_models['dcms'])
    assert len(x) == 3
