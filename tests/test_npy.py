"""kneeai's own `.npy` reader (`kneeai.core.read_npy`, `npy_header`): what numpy writes it reads as `np.load` does, what
numpy does not write it refuses, and kneeai reads volumes without `ast` (issue 18: numpy parses headers with
`ast.literal_eval`, which CPython 3.11 can fail with a `SystemError` when threads parse at once, gh-106905)."""
import ast, builtins, io, tempfile
from pathlib import Path
import numpy as np, pandas as pd, pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from kneeai.core import DataError, PLANES, npy_header, read_npy

DTYPES = ['|b1', '|i1', '|u1', '<i2', '>i2', '<u2', '>u2', '<i4', '>i4', '<u4', '<i8', '>u8', '<f2', '>f2', '<f4', '>f4', '<f8', '>f8', '<c8', '>c16']
TMP = Path(tempfile.mkdtemp())  # hypothesis runs the test many times: one folder, not a fixture per example

def npy(a, version=None) -> bytes:
    b = io.BytesIO(); np.lib.format.write_array(b, a, version=version, allow_pickle=False); return b.getvalue()

def npy_file(header:str, data:bytes=b'', version:bytes=b'\x01\x00') -> bytes:
    "A `.npy` file of any `header` text, padded and sized as numpy does"
    n = 10 if version == b'\x01\x00' else 12
    h = header + ' '*(63 - (n + len(header)) % 64) + '\n'
    return b'\x93NUMPY' + version + len(h).to_bytes(n - 8, 'little') + h.encode('latin1') + data

def same(a, ref):
    "Same dtype, shape, memory order and bytes (NaNs included)"
    assert (a.dtype, a.shape, a.flags.f_contiguous, a.flags.c_contiguous) == (ref.dtype, ref.shape, ref.flags.f_contiguous, ref.flags.c_contiguous)
    assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(ref).tobytes()

arrays = st.sampled_from(DTYPES).flatmap(lambda dt: hnp.arrays(np.dtype(dt), hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)))

@settings(max_examples=80, deadline=None)
@given(arrays, st.booleans(), st.sampled_from([None, (1, 0), (2, 0), (3, 0)]))
def test_reads_what_numpy_writes_as_np_load_does(a, fortran, version):
    data = npy(np.asfortranarray(a) if fortran else a, version)
    ref = np.load(io.BytesIO(data))
    same(read_npy(data), ref)
    assert npy_header(data)[:3] == (ref.shape, ref.dtype, ref.flags.f_contiguous and not ref.flags.c_contiguous)
    (fn := TMP/'a.npy').write_bytes(data)
    same(read_npy(fn), ref)
    m = read_npy(fn, mmap=True)
    same(m, ref); assert not m.size or not m.flags.writeable

def test_reads_npy_files_of_other_writers():
    "Headers with other spacing, no trailing comma, Python 2's long integers: still the dict numpy's own reader accepts"
    for h in ("{'descr': '<u2', 'fortran_order': False, 'shape': (2,3)}", "{'descr':'<u2','fortran_order':False,'shape':(2L, 3L),}"):
        data = npy_file(h, np.arange(6, dtype='<u2').tobytes())
        same(read_npy(data), np.arange(6, dtype='<u2').reshape(2, 3))

CRAFTED = {
    'pickled objects': (lambda: (np.save(b := io.BytesIO(), np.array([{'a': 1}], dtype=object), allow_pickle=True), b.getvalue())[1], 'holds pickled Python objects'),
    'a function call': (lambda: npy_file("{'descr': '|u1', 'fortran_order': False, 'shape': (__import__('os').getpid(),), }"), 'its header is not the dict np.save writes'),
    'a call in the dtype': (lambda: npy_file("{'descr': __import__('os').name, 'fortran_order': False, 'shape': (1,), }", b'x'), 'its header is not the dict'),
    'an extra key': (lambda: npy_file("{'descr': '|u1', 'fortran_order': False, 'shape': (1,), 'x': 1}", b'x'), 'its header is not the dict'),
    'keys out of order': (lambda: npy_file("{'shape': (1,), 'descr': '|u1', 'fortran_order': False}", b'x'), 'its header is not the dict'),
    'a negative side': (lambda: npy_file("{'descr': '|u1', 'fortran_order': False, 'shape': (-1,), }"), 'its header is not the dict'),
    'not a tuple': (lambda: npy_file("{'descr': '|u1', 'fortran_order': False, 'shape': (1), }", b'x'), 'is not a tuple'),
    'a huge shape': (lambda: npy_file("{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }", bytes(64)), 'truncated or corrupt'),
    'truncated data': (lambda: npy(np.ones((3, 4), '<f4'))[:-1], 'truncated or corrupt'),
    'trailing data': (lambda: npy(np.ones((3, 4), '<f4')) + b'\0', 'more data than its header says'),
    'a record dtype': (lambda: npy(np.zeros(2, [('a', '<f4')])), 'structured (record) dtype'),
    'a string dtype': (lambda: npy(np.array(['ab'])), "has dtype '<U2'"),
    'a datetime dtype': (lambda: npy(np.array(['2026-01-01'], 'datetime64[D]')), "has dtype '<M8[D]'"),
    'a huge header': (lambda: npy_file("{'descr': '|u1', 'fortran_order': False, 'shape': (1,), }" + ' '*20000, b'x', b'\x02\x00'), 'more than the 10000 numpy allows'),
    'an unknown version': (lambda: npy_file("{'descr': '|u1', 'fortran_order': False, 'shape': (1,), }", b'x', b'\x04\x00'), 'unknown format version (4, 0)'),
    'a cut header': (lambda: npy(np.ones(3))[:30], 'cut short in its header'),
    'no magic': (lambda: b'id,label\n0001,1\n', "it does not start with b'\\x93NUMPY'"),
    'empty': (lambda: b'', "it does not start with"),
}

@pytest.mark.parametrize('what', list(CRAFTED))
def test_refuses_what_numpy_does_not_write(what):
    make,reason = CRAFTED[what]
    (fn := TMP/'crafted.npy').write_bytes(make())
    for src in (fn, fn.read_bytes()):
        with pytest.raises(DataError) as e: read_npy(src, name='up.npy')
        assert e.value.path == 'up.npy' and reason in e.value.reason, (what, e.value.reason)

def test_volumes_and_predictions_need_no_ast(tiny_models):
    "Failed before: volume_info and load_volume parsed headers with numpy's reader (ast.literal_eval), so did the service"
    from kneeai.volumes import volume_info, load_volume
    from kneeai.learner import Predictor
    from kneeai.serve import exam_volumes, predict_batch
    exam = tiny_models['exam']
    pred = Predictor.load(tiny_models['mrnet'], 'cpu')
    vols = {p: load_volume(exam/f'{p}.npy') for p in PLANES}
    uploads = [(f'{p}.npy', (exam/f'{p}.npy').read_bytes()) for p in PLANES]
    ref = pred.predict_exams([exam])  # before the patch: torch's first DataLoader compiles a type annotation, once per process
    def boom(*args, **kwargs): raise SystemError('AST constructor recursion depth mismatch (before=2, after=1)')
    with pytest.MonkeyPatch.context() as mp:  # undone before pytest reports (its report parses source with compile)
        mp.setattr(ast, 'literal_eval', boom); mp.setattr(builtins, 'compile', boom)
        with pytest.raises(SystemError): ast.literal_eval('1')  # the patch is in force
        info = volume_info(exam/'axial.npy')
        loaded = {p: load_volume(exam/f'{p}.npy') for p in PLANES}
        got = pred.predict_exams([exam])  # the exam folder, as `kneeai predict` reads it
        served = predict_batch(pred, [exam_volumes(uploads)])[0]  # the service: uploads, then a batch
    assert info == (vols['axial'].shape, np.dtype(np.uint8))
    for p in PLANES: np.testing.assert_array_equal(loaded[p], vols[p])
    pd.testing.assert_frame_equal(got, ref)
    pd.testing.assert_frame_equal(served, ref.set_axis(['0']), check_names=False)
