"""`kneeai serve` as a client sees it: the real server (`kneeai serve`, uvicorn) started on free loopback ports with the tiny
untrained models of conftest (an MRNet `TripleMRNet` behind an API key, a fracture radiograph model without one), every endpoint,
bad uploads, the limits, the API key, and the probabilities of `/v1/predict` against those of `kneeai predict`."""
import base64, io, json, os, signal, subprocess, time, zipfile
from pathlib import Path
import numpy as np, pytest
pytest.importorskip('fastapi', reason='kneeai serve needs its extra: pip install "kneeai[serve]"')
httpx = pytest.importorskip('httpx')
from kneeai.core import PLANES
from conftest import kneeai_exe, kneeai_cmd, free_port, TINY_THRESHOLDS as THRESHOLDS

KEY = 'test-key-0123456789abcdef'

def _start(model, tmp:Path, name:str, *opts) -> tuple:
    port,log = free_port(),tmp/f'{name}.log'
    with open(log, 'w') as f:
        proc = subprocess.Popen([kneeai_exe(), 'serve', '--model', str(model), '--port', str(port), *map(str, opts)],
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, 'KNEEAI_API_KEY': ''})
    return f'http://127.0.0.1:{port}', proc, log

def _wait_ready(url, proc, log, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None: pytest.fail(f'`kneeai serve` exited with status {proc.returncode}:\n{log.read_text()[-3000:]}')
        try:
            if httpx.get(f'{url}/readyz', timeout=2).status_code == 200: return
        except httpx.HTTPError: pass
        time.sleep(.2)
    pytest.fail(f'`kneeai serve` was not ready within {timeout} s:\n{log.read_text()[-3000:]}')

@pytest.fixture(scope='module')
def srv(tiny_models, tmp_path_factory):
    "Both servers, started together on conftest's tiny models: the MRNet one with an API key, a 1 MB limit and batches, the radiograph one with at most 3 files"
    tmp = tmp_path_factory.mktemp('serve')
    m = tiny_models
    (keyf := tmp/'key').write_text(KEY + '\n')
    a = _start(m['mrnet'], tmp, 'mrnet', '--api-key-file', keyf, '--max-upload-mb', 1, '--max-batch', 8, '--batch-wait-ms', 20, '--threads', 1)
    b = _start(m['xr'], tmp, 'xr', '--max-files', 3, '--threads', 1)
    try:
        for s in (a, b): _wait_ready(*s)
        yield dict(m, a=a[0], b=b[0], a_log=a[2], b_log=b[2], tmp=tmp)
    finally:
        for _,proc,_ in (a, b):
            if proc.poll() is not None: continue
            os.killpg(proc.pid, signal.SIGTERM)
            try: proc.wait(20)
            except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL)

AUTH = {'Authorization': f'Bearer {KEY}'}

def exam_upload(exam:Path, field_planes=True) -> list:
    "An exam's three volumes as multipart files; with `field_planes`, named as MRNet stores them (the plane in the field only)"
    return [(p if field_planes else 'files', ('0013.npy' if field_planes else f'{p}.npy', (exam/f'{p}.npy').read_bytes())) for p in PLANES]

def test_health_readiness_and_model(srv):
    from kneeai.serve import model_digest
    assert httpx.get(f"{srv['a']}/healthz").json() == {'status': 'ok'}
    r = httpx.get(f"{srv['a']}/readyz")
    assert r.status_code == 200 and r.json()['model'] == model_digest(srv['mrnet'])
    r = httpx.get(f"{srv['a']}/v1/model", headers=AUTH)
    info = r.json()
    assert r.status_code == 200 and r.headers['x-request-id'] == info['request_id']
    assert (info['sha256'], info['inputs'], info['outputs'], info['thresholds']) == (model_digest(srv['mrnet']), 'exams', list(THRESHOLDS), THRESHOLDS)
    info = httpx.get(f"{srv['b']}/v1/model").json()
    assert (info['inputs'], info['outputs'], info['single_label'], info['thresholds']) == ('images', ['0', '1'], True, None)

def test_predict_gives_the_probabilities_of_kneeai_predict(srv):
    ref = json.loads(kneeai_cmd('predict', '--model', srv['mrnet'], srv['exam'], '--device', 'cpu').stdout)['exam']
    for files in (exam_upload(srv['exam']), exam_upload(srv['exam'], field_planes=False)):
        r = httpx.post(f"{srv['a']}/v1/predict", files=files, headers=AUTH, timeout=60)
        assert r.status_code == 200, r.text
        res = r.json()['results'][0]
        assert all(abs(res['probabilities'][t] - ref[t]) <= 1e-6 for t in THRESHOLDS), (res, ref)
        assert res['thresholds'] == THRESHOLDS and res['decisions'] == {t: ref[t] >= THRESHOLDS[t] for t in THRESHOLDS}
    zb = io.BytesIO()
    with zipfile.ZipFile(zb, 'w') as z:
        for p in PLANES: z.write(srv['exam']/f'{p}.npy', f'0013/{p}.npy')
    r = httpx.post(f"{srv['a']}/v1/predict", files={'files': ('0013.zip', zb.getvalue())}, headers=AUTH, timeout=60)
    assert r.json()['results'][0]['probabilities'] == res['probabilities']

def test_predict_a_dicom_study_gives_the_probabilities_of_its_exam(srv, tmp_path):
    "The exam written as a DICOM MR study (localiser, decoy series, shuffled names), sent as a zip: the same answer as its .npy volumes"
    from kneeai.mri import write_mr_study
    from kneeai.volumes import load_volume
    write_mr_study({p: load_volume(srv['exam']/f'{p}.npy') for p in PLANES}, tmp_path/'study', seed=5)
    zb = io.BytesIO()
    with zipfile.ZipFile(zb, 'w') as z:
        for f in (tmp_path/'study').iterdir(): z.write(f, f'study/{f.name}')
    ref = httpx.post(f"{srv['a']}/v1/predict", files=exam_upload(srv['exam']), headers=AUTH, timeout=60).json()['results'][0]
    r = httpx.post(f"{srv['a']}/v1/predict", files={'files': ('study.zip', zb.getvalue())}, headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    got = r.json()['results'][0]['probabilities']
    assert all(abs(got[t] - ref['probabilities'][t]) <= 1e-6 for t in THRESHOLDS), (got, ref)

def test_predict_radiographs_gives_the_probabilities_of_kneeai_predict(srv):
    dcms = srv['dcms']
    ref = json.loads(kneeai_cmd('predict', '--model', srv['xr'], *dcms, '--device', 'cpu').stdout)
    r = httpx.post(f"{srv['b']}/v1/predict", files=[('files', (f.name, f.read_bytes())) for f in dcms], timeout=60)
    assert r.status_code == 200, r.text
    res = r.json()['results']
    assert [o['input'] for o in res] == [f.name for f in dcms]  # names may repeat (IM0001.dcm of two studies)
    for o,f in zip(res, dcms):
        assert all(abs(o['probabilities'][c] - ref[str(f)][c]) <= 1e-6 for c in ('0', '1'))
        assert o['positive'] == [max(('0', '1'), key=ref[str(f)].get)]

def test_concurrent_requests_each_get_their_own_answer(srv):
    "Concurrent exams (some mirrored and shorter) are batched; each answer is that exam's own, as alone (float rounding of a padded batch)"
    import concurrent.futures as cf
    flip = [(p, (n, np.load(io.BytesIO(b))[:-3, :, ::-1].copy())) for p,(n,b) in exam_upload(srv['exam'])]
    flip = [(p, (n, (lambda a: (np.save(buf := io.BytesIO(), a), buf.getvalue())[1])(a))) for p,(n,a) in flip]
    uploads = [exam_upload(srv['exam']), flip]*2
    post = lambda fs: httpx.post(f"{srv['a']}/v1/predict", files=fs, headers=AUTH, timeout=60).json()['results'][0]['probabilities']
    with cf.ThreadPoolExecutor(4) as ex: res = list(ex.map(post, uploads))
    alone = [post(uploads[0]), post(uploads[1])]
    for i,r in enumerate(res): assert all(abs(r[t] - alone[i % 2][t]) <= 1e-5 for t in THRESHOLDS), (i, r, alone)
    assert alone[0] != alone[1]

def _err(r, status):
    assert r.status_code == status, (r.status_code, r.text)
    e = r.json()['error']
    assert r.json()['request_id'] == r.headers['x-request-id']
    return e['file'], e['reason']

def test_bad_uploads_are_4xx_naming_the_file(srv):
    from pydicom.data import get_testdata_file
    a,b,exam = srv['a'], srv['b'], srv['exam']
    post = lambda url, files, **kw: httpx.post(f'{url}/v1/predict', files=files, timeout=60, **kw)
    files = exam_upload(exam, False)
    files[2] = ('files', ('axial.npy', (exam/'axial.npy').read_bytes()[:300]))
    assert _err(post(a, files, headers=AUTH), 422)[0] == 'axial.npy'
    assert _err(post(a, exam_upload(exam, False)[:2], headers=AUTH), 422)[1] == 'no axial volume'
    assert _err(post(a, {'files': ('notes.txt', b'hello')}, headers=AUTH), 422) == ('notes.txt', 'not a file kneeai can read')
    assert _err(post(a, {'files': ('knee.dcm', srv['dcms'][0].read_bytes())}, headers=AUTH), 422) == (
        'knee.dcm', 'this TripleMRNet model reads MRNet exams, not radiographs')
    assert _err(httpx.post(f'{a}/v1/predict', headers=AUTH, data={'x': '1'}), 422)[1] == 'no file was sent'
    assert _err(post(b, {'files': ('exam.npy', (exam/'axial.npy').read_bytes())}), 422)[1].startswith('this RadiographNet model reads radiographs')
    broken = Path(get_testdata_file('CT_small.dcm')).read_bytes()[:1200]  # the pixel data cut off
    assert _err(post(b, {'files': ('cut.dcm', broken)}), 422)[0] == 'cut.dcm'
    assert _err(post(b, {'files': ('png.png', b'\x89PNG\r\n\x1a\n' + bytes(50))}), 422)[0] == 'png.png'
    assert httpx.get(f'{b}/healthz').status_code == 200  # the server goes on

def test_limits(srv):
    r = httpx.post(f"{srv['a']}/v1/predict", files={'files': ('big.npy', bytes(2**20 + 10))}, headers=AUTH, timeout=60)
    assert _err(r, 413)[1] == 'the upload is larger than the limit of 1 MB'
    dcm = srv['dcms'][0].read_bytes()
    r = httpx.post(f"{srv['b']}/v1/predict", files=[('files', (f'{i}.dcm', dcm)) for i in range(4)], timeout=60)
    assert _err(r, 413)[1] == '4 files in one request, more than the limit of 3'
    r = httpx.post(f"{srv['b']}/v1/explain?method=nope", files={'files': ('a.dcm', dcm)}, timeout=60)
    assert _err(r, 422) == ('nope', 'not a CAM method kneeai knows')

def test_api_key(srv, monkeypatch):
    monkeypatch.delenv('KNEEAI_API_KEY', raising=False)
    for h in ({}, {'Authorization': 'Bearer wrong-key-0123456789abcd'}, {'X-API-Key': KEY[:-1]}):
        for path in ('/v1/model', '/metrics'):
            r = httpx.get(f"{srv['a']}{path}", headers=h)
            assert r.status_code == 401 and r.headers['www-authenticate'] == 'Bearer', (h, path)
        assert _err(httpx.post(f"{srv['a']}/v1/predict", files=exam_upload(srv['exam']), headers=h), 401)[1] == 'a missing or wrong API key'
    assert httpx.get(f"{srv['a']}/v1/model", headers={'X-API-Key': KEY}).status_code == 200
    assert httpx.get(f"{srv['a']}/healthz").status_code == 200  # probes need no key
    rc = kneeai_cmd('serve', '--model', srv['mrnet'], '--host', '0.0.0.0')
    assert rc.returncode == 1 and 'listening beyond this machine needs an API key' in rc.stderr, rc.stderr
    (short := srv['tmp']/'short').write_text('abc')
    rc = kneeai_cmd('serve', '--model', srv['mrnet'], '--host', '0.0.0.0', '--api-key-file', short)
    assert rc.returncode == 1 and 'shorter than 16 characters' in rc.stderr

def test_explain(srv):
    r = httpx.post(f"{srv['a']}/v1/explain?tasks=acl&k=2", files=exam_upload(srv['exam']), headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    j = r.json()
    planes = j['summary']['tasks']['acl']['planes']
    assert set(planes) == set(PLANES) and all(len(v['top_slices']) == 2 for v in planes.values())
    assert len(j['images']) == 7 and all(base64.b64decode(v).startswith(b'\x89PNG') for v in j['images'].values())
    r = httpx.post(f"{srv['b']}/v1/explain", files={'files': ('knee.dcm', srv['dcms'][0].read_bytes())}, timeout=60)
    j = r.json()
    assert r.status_code == 200 and j['summary']['images'][0]['input'] == 'knee.dcm' and len(j['images']) == 1

def test_metrics_and_a_log_without_file_names(srv):
    txt = httpx.get(f"{srv['a']}/metrics", headers=AUTH).text
    for line in ('kneeai_requests_total{endpoint="/v1/predict",status="200"}', 'kneeai_requests_total{endpoint="/v1/predict",status="422"}',
                 'kneeai_request_errors_total{endpoint="/v1/predict",error="Unauthorized"}', 'kneeai_request_seconds_bucket{endpoint="/v1/predict",le="60.0"}',
                 'kneeai_batch_size_count', 'kneeai_batch_seconds_count'):
        assert line in txt, line
    r = httpx.post(f"{srv['b']}/v1/predict", files={'files': ('DOE^JOHN_1961.dcm', srv['dcms'][0].read_bytes())}, timeout=60)
    assert r.status_code == 200
    for _ in range(100):  # the access line is written once the answer has gone out: wait for it
        log = srv['b_log'].read_text()
        if r.headers['x-request-id'] in log: break
        time.sleep(.05)
    assert r.headers['x-request-id'] in log and 'DOE^JOHN' not in log and 'cut.dcm' not in log

def test_side_of_a_canonical_model(kl_model, xr_data, tmp_path):
    """A canonical KL model (#19), in the process (Starlette's TestClient): GET /v1/model says it needs each knee's side; the form
    field `side` (any case) for /v1/predict and /v1/explain, as `Predictor.predict_images(sides=...)`; what is wrong is a 422"""
    from PIL import Image
    from starlette.testclient import TestClient
    from kneeai.learner import Predictor
    from kneeai.serve import serve_app
    xr,df = xr_data
    pred = Predictor.load(kl_model, 'cpu')
    png = tmp_path/'knee.png'
    Image.fromarray((np.random.default_rng(0).random((48, 40))*255).astype(np.uint8)).save(png)
    right = xr/df.file[df.laterality.eq('R').idxmax()]
    ref = pred.predict_images([png, png], names=['R', 'L'], sides=['R', 'L'])
    assert (ref.iloc[0] - ref.iloc[1]).abs().max() > 1e-4  # the model tells a knee from its mirror image
    with TestClient(serve_app(pred)) as c:
        assert c.get('/v1/model').json()['canonical_side'] == 'L'
        post = lambda files, ep='predict', **data: c.post(f'/v1/{ep}', files=files, data=data)
        up = {'files': ('knee.png', png.read_bytes())}
        for side,row in (('r', 0), ('L', 1)):
            r = post(up, side=side)
            assert r.status_code == 200, r.text
            got = r.json()['results'][0]['probabilities']
            assert all(abs(got[k] - ref.iloc[row][k]) <= 1e-6 for k in got), (side, got, ref)
        assert post(up, side='').status_code == 422  # empty: as if not sent
        r = post(up)
        assert _err(r, 422) == ('knee.png', "the model shows every knee as a left one, and the knee's side is unknown (no DICOM Image Laterality or Laterality)")
        assert r.json()['error']['hint'] == "send the form field side, L or R: the knee's side of every image of the request"
        assert _err(post(up, side='left knee'), 422) == ('side', "'left knee' is not a side")
        dcm = {'files': ('right.dcm', right.read_bytes())}
        assert post(dcm).status_code == 200  # the side in the header
        assert _err(post(dcm, side='l'), 422) == ('right.dcm', 'the side given, L, contradicts the DICOM header, which says R (Image Laterality, Laterality or Frame Laterality)')
        r = post(up, 'explain', side='R')
        assert r.status_code == 200 and len(r.json()['images']) == 1, r.text
        assert _err(post(up, 'explain'), 422)[0] == 'knee.png'
