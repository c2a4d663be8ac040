"""The web app driven by Streamlit's `AppTest` (no browser): upload an exam, check the probabilities shown against
`kneeai.learner.predict_exams`, and that bad uploads, missing or pickled models give a message in the page."""
import io, shutil, sys, zipfile
from pathlib import Path
import numpy as np, pandas as pd, pytest

st_testing = pytest.importorskip('streamlit.testing.v1', reason='the app tests need Streamlit: pip install "kneeai[app]"')
from streamlit.testing.v1 import AppTest
import kneeai.app
from kneeai.core import PLANES, MRNET_TASKS
from kneeai.learner import predict_exams

from conftest import TINY_THRESHOLDS as THRESHOLDS

APP = kneeai.app.__file__

@pytest.fixture(scope='module')
def tiny(tiny_models):
    "conftest's untrained `TripleMRNet` (small CNN, 32 px) and its exam folder (read it, never write to it)"
    return tiny_models['mrnet'], tiny_models['exam']

def exam_files(exam):
    return [(f'{p}.npy', (exam/f'{p}.npy').read_bytes(), 'application/octet-stream') for p in PLANES]

def start(monkeypatch, *argv, home=None):
    "Run the app's script once with `argv` as its own options (what `streamlit run app.py -- ...` passes)"
    monkeypatch.setattr(sys, 'argv', ['app.py', *map(str, argv)])
    if home is not None: monkeypatch.setenv('KNEEAI_HOME', str(home))
    at = AppTest.from_file(APP, default_timeout=180).run()
    assert not at.exception, at.exception
    return at

def shown_probs(at) -> pd.DataFrame:
    "The probabilities table of the page (main area) as numbers, indexed by task"
    t = at.main.table[0].value.reset_index()
    return t.set_index('task')[['probability', 'threshold', 'call']].astype({'probability': float, 'threshold': float})

def errors(at): return [e.value for e in at.error]

def test_upload_shows_the_probabilities_of_predict_exams(tiny, monkeypatch):
    model,exam = tiny
    at = start(monkeypatch, '--model', model)
    assert errors(at) == [] and len(at.file_uploader) == 1
    at.file_uploader[0].set_value(exam_files(exam)).run()
    assert not at.exception and errors(at) == []
    shown = shown_probs(at)
    ref = predict_exams(model, [exam])
    assert list(shown.index) == list(MRNET_TASKS)
    for t in MRNET_TASKS:
        assert abs(shown.loc[t, 'probability'] - ref.loc['exam', t]) <= 5e-5 + 1e-6  # shown with 4 decimals
        assert shown.loc[t, 'threshold'] == pytest.approx(THRESHOLDS[t])
        assert shown.loc[t, 'call'] == ('positive' if ref.loc['exam', t] >= THRESHOLDS[t] else 'negative')
    assert [b.label for b in at.get('download_button')] == ['Download JSON', 'Download CSV']

def test_zip_upload_gives_the_same_probabilities(tiny, monkeypatch):
    model,exam = tiny
    b = io.BytesIO()
    with zipfile.ZipFile(b, 'w') as z:
        for p in PLANES: z.write(exam/f'{p}.npy', f'{p}/0013.npy')  # MRNet's own layout
    at = start(monkeypatch, '--model', model)
    at.file_uploader[0].set_value(('0013.zip', b.getvalue(), 'application/zip')).run()
    ref = predict_exams(model, [exam])
    assert errors(at) == []
    np.testing.assert_allclose(shown_probs(at).probability, ref.loc['exam', list(MRNET_TASKS)].astype(float), atol=5e-5 + 1e-6)

def test_bad_upload_is_a_message_and_the_app_goes_on(tiny, monkeypatch):
    model,exam = tiny
    at = start(monkeypatch, '--model', model)
    at.file_uploader[0].set_value(('labels.csv', b'0001,1\n', 'text/csv')).run()
    assert not at.exception
    assert len(errors(at)) == 1 and errors(at)[0].startswith('labels.csv: not a file kneeai can read')
    pickled = io.BytesIO(); np.save(pickled, np.array([{'x': 1}], dtype=object), allow_pickle=True)
    at.file_uploader[0].set_value([('sagittal.npy', pickled.getvalue(), 'application/octet-stream'), *exam_files(exam)[1:]]).run()
    assert 'holds pickled Python objects' in errors(at)[0]
    at.file_uploader[0].set_value(exam_files(exam)).run()
    assert errors(at) == [] and list(shown_probs(at).index) == list(MRNET_TASKS)

def test_upload_limit(tiny, monkeypatch):
    model,exam = tiny
    at = start(monkeypatch, '--model', model, '--max-upload-mb', '0.01')
    at.file_uploader[0].set_value(exam_files(exam)).run()
    assert 'more than the limit of 0.01 MB' in errors(at)[0]
    assert not at.main.table

def test_pickled_model_is_refused_without_trust(tmp_path, monkeypatch):
    (tmp_path/'export.pkl').write_bytes(b'never unpickled')
    at = start(monkeypatch, '--model', tmp_path)
    assert 'can run arbitrary code when loaded' in errors(at)[0] and '--trust-pickle' in errors(at)[0]
    assert not at.file_uploader

def test_without_model_says_how_to_make_one(tmp_path, monkeypatch):
    at = start(monkeypatch, home=tmp_path)
    assert 'kneeai demo' in errors(at)[0] and not at.file_uploader

def test_without_model_offers_the_demo_model(tiny, tmp_path, monkeypatch):
    model,exam = tiny
    shutil.copytree(model, tmp_path/'demo'/'model')
    shutil.copytree(exam, tmp_path/'demo'/'example_exam')  # as `kneeai demo` leaves one
    at = start(monkeypatch, home=tmp_path)
    assert 'kneeai demo' in at.info[0].value and not at.file_uploader
    at.button(key='use_demo').click().run()
    assert not at.exception and len(at.file_uploader) == 1
    assert len(at.info) == 1 and str(tmp_path/'demo'/'example_exam') in at.info[0].value  # the offer is gone
    at.file_uploader[0].set_value(exam_files(exam)).run()
    assert list(shown_probs(at).index) == list(MRNET_TASKS)

def test_gradcam_slider_starts_at_the_most_important_slice(tiny, monkeypatch):
    from kneeai.interpret import exam_cams
    from kneeai.app import load_app_model, read_exam
    model,exam = tiny
    at = start(monkeypatch, '--model', model)
    at.file_uploader[0].set_value(exam_files(exam)).run()
    pred = load_app_model(model)
    cams = exam_cams(pred.model, read_exam([exam/f'{p}.npy' for p in PLANES]), pred.cfg, task='abnormal')
    sliders = {s.label.split()[0]: s for s in at.main.slider}
    assert list(sliders) == list(PLANES)
    for p in PLANES: assert sliders[p].value == int(cams['planes'][p]['ranking'][0])
    assert all('★ no. 1 of the most important' in img.captions[0] for img in at.main.image)
    second = int(cams['planes']['axial']['ranking'][1])
    sliders['axial'].set_value(second).run()
    assert at.main.image[2].captions[0] == f'axial, slice {second} of 0–{len(np.load(exam/"axial.npy")) - 1} · ★ no. 2 of the most important'
    at.selectbox(key='cam_task').set_value('acl').run()
    assert not at.exception and errors(at) == [] and len(at.main.image) == 3

@pytest.fixture(scope='module')
def xr_model(tiny_models):
    "conftest's untrained fracture model (small CNN, 32 px) and three synthetic DICOM radiographs"
    return tiny_models['xr'], tiny_models['dcms']

def test_radiographs_show_the_probabilities_of_predict_images(xr_model, monkeypatch, tmp_path):
    from PIL import Image
    from kneeai.learner import predict_images
    model,dcms = xr_model
    png = tmp_path/'knee.png'
    Image.fromarray((np.random.default_rng(0).random((48, 40))*255).astype(np.uint8)).save(png)
    files = [*dcms, png]
    uploads = [(f.name, f.read_bytes(), 'application/octet-stream') for f in files]
    assert [n for n,_,_ in uploads[:3]] == ['IM0001.dcm', 'IM0002.dcm', 'IM0001.dcm']  # DICOM names repeat across studies
    at = start(monkeypatch, '--model', model)
    at.file_uploader[0].set_value(uploads).run()
    assert not at.exception and errors(at) == []
    t = at.main.table[0].value.reset_index()
    ref = predict_images(model, files)
    for name,f in zip(['IM0001.dcm', 'IM0002.dcm', 'IM0001.dcm (2)', 'knee.png'], files):
        for cls,label in (('0', 'no fracture'), ('1', 'fracture')):
            shown = float(t[(t.input == name) & (t.task == label)].probability.iloc[0])
            assert abs(shown - ref.loc[str(f), cls]) <= 5e-5 + 1e-6
        best = t[(t.input == name) & (t.call == 'most probable')].task.tolist()
        assert best == [['no fracture', 'fracture'][int(ref.loc[str(f), ['0', '1']].astype(float).to_numpy().argmax())]]
    assert len(at.main.image) == len(files)
    # the DICOM tags: identifying ones only when asked
    tags = at.main.table[1].value
    assert 'Modality' in tags.index and 'PatientID' not in tags.index and 'PatientName' not in tags.index
    at.sidebar.checkbox(key='phi').check().run()
    assert 'PatientID' in at.main.table[1].value.index

def test_dicom_with_an_mrnet_model_is_a_message_and_its_tags_are_shown(tiny, monkeypatch):
    from pydicom.data import get_testdata_file
    model,_ = tiny
    at = start(monkeypatch, '--model', model)
    at.file_uploader[0].set_value(('CT_small.dcm', Path(get_testdata_file('CT_small.dcm')).read_bytes(), 'application/dicom')).run()
    assert not at.exception
    assert errors(at)[0].startswith('CT_small.dcm: this model reads MRNet exams, not radiographs')
    tags = at.main.table[0].value
    assert tags.loc['Modality', 'value'] == 'CT' and 'PatientName' not in tags.index

def test_a_heatmap_failure_leaves_the_probabilities(tiny, monkeypatch):
    import kneeai.interpret
    def boom(*args, **kwargs): raise RuntimeError('boom')
    monkeypatch.setattr(kneeai.interpret, 'exam_cams', boom)
    model,exam = tiny
    at = start(monkeypatch, '--model', model)
    at.file_uploader[0].set_value(exam_files(exam)).run()
    assert errors(at) == ['The heatmaps could not be computed: RuntimeError: boom']
    assert [e.message for e in at.exception] == ['boom']  # the traceback, in the page's 'Details for a bug report'
    assert list(shown_probs(at).index) == list(MRNET_TASKS)

def test_pickled_model_loads_with_trust_pickle(tiny, mrnet_data, tmp_path, monkeypatch):
    from kneeai.volumes import mrnet_dls
    from kneeai.train import mrnet_learner
    from kneeai.learner import Predictor
    from kneeai.app import exam_probs, read_exam
    _,exam = tiny
    learn = mrnet_learner(mrnet_dls(mrnet_data, bs=4, size=32, num_workers=0, seed=0, device='cpu'), 'small_cnn', in_chans=1, csv_log=False, path=tmp_path)
    (tmp_path/'pkl').mkdir()
    learn.export(tmp_path/'pkl'/'export.pkl')
    at = start(monkeypatch, '--model', tmp_path/'pkl', '--trust-pickle')
    at.file_uploader[0].set_value(exam_files(exam)).run()
    assert not at.exception and errors(at) == []
    ref = exam_probs(Predictor.load(tmp_path/'pkl', trust_pickle=True), read_exam([exam/f'{p}.npy' for p in PLANES])).iloc[0]
    np.testing.assert_allclose(shown_probs(at).probability, ref[list(MRNET_TASKS)].astype(float), atol=5e-5 + 1e-6)
    assert set(shown_probs(at).threshold) == {.5}  # an exported learner without tuned thresholds

def test_real_mrnet_exam(tiny, tmp_path, monkeypatch):
    "One of MRNet's own exams (256 px, its own slice counts), when the reference samples are on this machine"
    from kneeai.core import reference_data
    samples = reference_data('mrnet-samples')
    if samples is None: pytest.skip('the MRNet sample exams (shared/data/mrnet-samples) are not on this machine')
    model,_ = tiny
    exam = tmp_path/'1220'
    exam.mkdir()
    for p in PLANES: shutil.copy(samples/'valid'/p/'1220.npy', exam/f'{p}.npy')
    at = start(monkeypatch, '--model', model)
    at.file_uploader[0].set_value(exam_files(exam)).run()
    assert not at.exception and errors(at) == []
    ref = predict_exams(model, [exam]).iloc[0]
    np.testing.assert_allclose(shown_probs(at).probability, ref[list(MRNET_TASKS)].astype(float), atol=5e-5 + 1e-6)
    for s,p in zip(at.main.slider, PLANES): assert s.max == len(np.load(exam/f'{p}.npy')) - 1

def test_side_control_of_a_canonical_model(kl_model, xr_data, xr_model, monkeypatch, tmp_path):
    """A canonical KL model (#19): the sidebar offers the knees' side (from the DICOM header, left, right), which goes to the
    prediction and the heatmaps, as `predict_images(sides=...)`; no such control for another model"""
    from PIL import Image
    from kneeai.learner import predict_images
    xr,df = xr_data
    png = tmp_path/'knee.png'
    Image.fromarray((np.random.default_rng(0).random((48, 40))*255).astype(np.uint8)).save(png)
    right = xr/df.file[df.laterality.eq('R').idxmax()]
    from streamlit.delta_generator import DeltaGenerator
    from kneeai.interpret import overlay
    from kneeai.radiographs import load_radiograph
    from kneeai.learner import Predictor
    shown,image = [],DeltaGenerator.image
    monkeypatch.setattr(DeltaGenerator, 'image', lambda self, img, *a, **kw: (shown.append(np.asarray(img)), image(self, img, *a, **kw))[1])
    at = start(monkeypatch, '--model', xr_model[0])
    assert [r.key for r in at.sidebar.radio] == ['cam_method']  # not canonical: no side to give
    at = start(monkeypatch, '--model', kl_model)
    assert at.sidebar.radio(key='knee_side').value == 'header'
    at.file_uploader[0].set_value([('knee.png', png.read_bytes(), 'image/png')]).run()
    assert not at.exception and len(errors(at)) == 1 and "knee.png: the model shows every knee as a left one, and the knee's side is unknown" in errors(at)[0]
    assert "choose the knees' side in the sidebar" in errors(at)[0]
    at.sidebar.slider(key='cam_alpha').set_value(0.).run()  # the image alone: is it shown as acquired?
    at.sidebar.radio(key='knee_side').set_value('R').run()
    assert not at.exception and errors(at) == []
    ref = predict_images(kl_model, [png], sides=['R'])
    t = at.main.table[0].value.reset_index()
    assert np.allclose(t.probability.astype(float), ref.loc[str(png)].astype(float), atol=5e-5 + 1e-6)
    assert at.main.image[0].captions[0].startswith('knee.png (R knee): ')
    data = {**Predictor.load(kl_model, 'cpu').data, 'canonical_side': None}
    np.testing.assert_array_equal(shown[-1], overlay(load_radiograph(png, **data)[0].numpy(), np.zeros((32, 32)), 0.))  # the model read it mirrored
    assert (shown[-1] != shown[-1][:, ::-1]).any()  # (an image that is not its own mirror image)
    at.file_uploader[0].set_value([('right.dcm', right.read_bytes(), 'application/dicom')]).run()
    at.sidebar.radio(key='knee_side').set_value('L').run()
    assert 'right.dcm: the side given, L, contradicts the DICOM header, which says R' in errors(at)[0]
    at.sidebar.radio(key='knee_side').set_value('header').run()
    assert not at.exception and errors(at) == []
    t = at.main.table[0].value.reset_index()
    assert np.allclose(t.probability.astype(float), predict_images(kl_model, [right]).loc[str(right)].astype(float), atol=5e-5 + 1e-6)
