"Robustness of kneeai.preprocess: any 2-D array gives a valid image or a DataError; folders survive bad and odd files"
import warnings
warnings.filterwarnings('ignore', message='.*torch.jit.script.*')
import numpy as np, pandas as pd, pytest
from hypothesis import given, settings, HealthCheck, strategies as st
from hypothesis.extra.numpy import arrays
from kneeai.core import DataError
from kneeai.preprocess import preprocess_radiograph, preprocess_folder, knee_box, exposed_field, body_mask, clahe_batch, clahe, load_image, image01, save_image

shapes = st.tuples(st.integers(1, 300), st.integers(1, 300))
images = st.one_of(
    arrays(np.float64, shapes, elements=st.floats(allow_nan=True, allow_infinity=True, width=64)),
    arrays(np.uint16, shapes),
    arrays(np.int16, shapes),
    arrays(np.uint8, st.tuples(st.integers(1, 120), st.integers(1, 120), st.just(3))),
)

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(img=images, crop=st.booleans(), clip=st.sampled_from([None, .01, .05]))
def test_any_array(img, crop, clip):
    "Every array either becomes a finite [0, 1] float32 image of the requested size or raises DataError"
    try: out = preprocess_radiograph(img, size=32, crop=crop, clip_limit=clip)
    except DataError as e:
        assert '2-D grayscale' in e.reason
        return
    assert out.shape == (32, 32) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1

@pytest.mark.parametrize('img', [np.zeros((64, 64)), np.full((100, 80), 7.), (np.arange(64*64) % 2).reshape(64, 64).astype(float),
                                 np.random.default_rng(0).random((20, 900)), np.random.default_rng(1).random((700, 17)),
                                 np.random.default_rng(2).random((16, 4000)), np.random.default_rng(3).random((17, 9000))])
def test_degenerate(img):
    "Flat, binary and very elongated images do not break the finders"
    h,w = img.shape
    x0,y0,x1,y1 = exposed_field(img)
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    assert body_mask(img).shape == img.shape
    bx0,by0,bx1,by1 = knee_box(img)
    assert bx1 - bx0 == by1 - by0 > 0
    assert preprocess_radiograph(img, size=24).shape == (24, 24)

def test_clahe_batch_devices():
    "clahe_batch keeps shape and device, works on a batch, and matches clahe within the documented tolerance"
    x = np.random.default_rng(2).random((3, 1, 64, 64)).astype(np.float32)
    import torch
    y = clahe_batch(torch.from_numpy(x))
    assert y.shape == x.shape and y.device.type == 'cpu'
    ref = clahe(x[0, 0])
    assert np.abs(ref - y[0, 0].numpy()).mean() < .03

def test_folder_odd_files(tmp_path):
    "Odd files in the source folder (empty, directory named .dcm, non-DICOM, no extension) are recorded, not fatal"
    from kneeai.synthetic_radiographs import synth_radiographs
    src = tmp_path/'src'
    synth_radiographs(src, n=3, seed=3, size=128, progress=False)
    (src/'labels.csv').unlink()
    (src/'empty.dcm').write_bytes(b'')
    (src/'folder.dcm').mkdir()
    (src/'sub').mkdir(); (src/'sub'/'junk.dcm').write_bytes(b'\0'*128 + b'DICM' + b'\xff'*40)
    one = next(src.rglob('IM0001.dcm'))
    (src/'sub'/'IMG0005').write_bytes(one.read_bytes()) # a DICOM file without an extension
    man = preprocess_folder(src, tmp_path/'out', size=32, n_workers=2, progress=False)
    by = man.set_index('source')
    assert (by.loc['sub/IMG0005', 'status'], by.loc['sub/IMG0005', 'output']) == ('ok', 'sub/IMG0005.png')
    assert by.loc['empty.dcm', 'status'] == 'failed' and by.loc['sub/junk.dcm', 'status'] == 'failed'
    assert (man.status == 'ok').sum() == 4 and (man.reason[man.status == 'failed'] != '').all()
    again = preprocess_folder(src, tmp_path/'out', size=32, n_workers=0, progress=False)
    assert (again.status == 'skipped').sum() == 4 and (again.status == 'failed').sum() == 2
    assert pd.read_csv(tmp_path/'out'/'manifest.csv').shape[0] == len(man)


@pytest.mark.parametrize('dtype', [np.uint16, np.int32, np.int64])
def test_load_image_12bit(tmp_path, dtype):
    "12-bit data is divided by 4095 whatever integer type holds it (int32/int64 were divided by their type's maximum)"
    np.save(tmp_path/'a.npy', np.array([[0, 2048, 4095]], dtype))
    np.testing.assert_allclose(load_image(tmp_path/'a.npy'), [[0, 2048/4095, 1]], rtol=1e-6)

def test_load_image_float_out_of_range(tmp_path):
    np.save(tmp_path/'f.npy', np.array([[0., 4095.]], np.float32))
    with pytest.raises(DataError, match='f.npy: float pixel values from 0 to 4095'): load_image(tmp_path/'f.npy')

@settings(max_examples=40, deadline=None)
@given(x=arrays(np.float32, st.tuples(st.integers(1, 20), st.integers(1, 20)), elements=st.floats(.25, 1, width=32)))
def test_save_load_round_trip(tmp_path_factory, x):
    "What `save_image` writes, `load_image` reads back (images brighter than 1/4: see `image01` for darker ones)"
    x[0, 0] = 1
    fn = save_image(x, tmp_path_factory.mktemp('rt')/'x.png')
    np.testing.assert_allclose(load_image(fn), x, atol=1/65535)
    np.testing.assert_allclose(load_image(fn, bits=16), x, atol=1/65535)

@settings(max_examples=60, deadline=None)
@given(a=st.sampled_from([np.uint8, np.uint16, np.int32, np.int64, np.uint32]).flatmap(lambda t: arrays(
    t, st.tuples(st.integers(1, 8), st.integers(1, 8)), elements=st.integers(0, min(2**20, np.iinfo(t).max)))))
def test_image01_any_nonnegative_int(a):
    y = image01(a)
    assert y.dtype == np.float32 and y.shape == a.shape and 0 <= y.min() and y.max() <= 1
    assert a.max() < 128 or y.max() >= .25   # depths 2 bits apart: the maximum fills at least a quarter of the chosen one
