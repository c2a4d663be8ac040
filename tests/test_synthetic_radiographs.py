"Synthetic DICOM radiographs: every storage variant round-trips, windows display right, bad arguments fail clearly"
import itertools
import numpy as np, pandas as pd, pydicom, pytest
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from kneeai.core import DataError
from kneeai.synthetic_radiographs import (synth_radiograph, synth_radiographs, synth_mura, radiograph_plan,
    radiograph_dataset, synth_radiograph_row, display_image, writable_transfer_syntaxes, TRANSFER_SYNTAXES)

ROW = dict(study_id='A10000001', image=1, modality='CR', patient_name='Doe^Jane', patient_id='KN1234567',
           birth_date='19700101', sex='F', age=54, address='1 Elm Road', phone='+44 1 2', institution='Northfield General Hospital',
           station='NGHXR1', referring='Smith^Ann^^Dr', study_date='20240102', study_time='101500', laterality='L',
           rescale_slope=.5, rescale_intercept=-1024., transfer_syntax='explicit')

@pytest.mark.parametrize('ts,bits,phot,modality', [(t, b, p, m) for t,(b,p,m) in itertools.product(
    writable_transfer_syntaxes(), [(12, 'MONOCHROME1', 'CR'), (13, 'MONOCHROME2', 'DX'), (15, 'MONOCHROME1', 'DX'), (16, 'MONOCHROME2', 'CR')])])
def test_roundtrip(tmp_path, ts, bits, phot, modality):
    px,meta = synth_radiograph(bits, 80, 'LAT', 'L', 4, phot, bits)
    fn = tmp_path/'a.dcm'
    radiograph_dataset(px, meta, {**ROW, 'transfer_syntax': ts, 'modality': modality}).save_as(fn, enforce_file_format=True)
    ds = pydicom.dcmread(fn)
    assert ds.file_meta.TransferSyntaxUID == TRANSFER_SYNTAXES[ts]
    np.testing.assert_array_equal(ds.pixel_array, px)
    assert int(px.max()) < 2**bits

def test_window_tags_display_like_display_image(tmp_path):
    "A viewer that applies the DICOM modality LUT, VOI window and MONOCHROME1 inversion sees `display_image`"
    for phot in ('MONOCHROME1', 'MONOCHROME2'):
        px,meta = synth_radiograph(0, 96, 'AP', 'R', 0, phot, 14)
        ds = radiograph_dataset(px, meta, ROW)
        shown = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
        lo,hi = shown.min(), shown.max()
        shown = (shown - lo)/(hi - lo)
        if phot == 'MONOCHROME1': shown = 1 - shown
        assert np.abs(shown*255 - display_image(px, meta)).mean() < 2

def test_plan_frequencies_and_structure():
    plan = radiograph_plan(3000, seed=5, fracture_rate=.3, mono1_rate=.5, transfer_syntaxes={'rle': 1, 'explicit': 3})
    studies = plan.drop_duplicates('study_id')
    assert abs(studies.fracture.mean() - .3) < .002 and abs(plan.fracture.mean() - .3) < .03
    assert abs((plan.photometric == 'MONOCHROME1').mean() - .5) < .03
    assert abs((plan.transfer_syntax == 'rle').mean() - .25) < .03
    assert (plan.groupby('study_id').view.first() == 'AP').all()
    assert plan.bits_stored.between(12, 16).all() and set(plan.modality) == {'CR', 'DX'}

def test_study_views_share_fracture(tmp_path):
    "An AP and a lateral view of one knee are drawn with the same fracture generator"
    plan = radiograph_plan(12, seed=1, fracture_rate=1.)
    two = plan.groupby('study_id').filter(lambda d: len(d) >= 2)
    a,b = two.iloc[0], two.iloc[1]
    assert a.study_id == b.study_id and a.schatzker == b.schatzker > 0
    assert synth_radiograph_row(a, 1, 96)[1]['fracture_box'] and synth_radiograph_row(b, 1, 96)[1]['fracture_box']

@pytest.mark.parametrize('kwargs,match', [(dict(n=0), 'n '), (dict(n=3, patients=4), 'patients'), (dict(size=32), 'size'),
                                          (dict(fracture_rate=-.1), 'fracture_rate'), (dict(mono1_rate=2), 'mono1_rate'),
                                          (dict(transfer_syntaxes={'jpeg-xl': 1}), 'cannot write')])
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(DataError, match=match): synth_radiographs(tmp_path/'out', **{'n': 4, 'progress': False, **kwargs})
    assert not (tmp_path/'out').exists()

def test_mura_bad_arguments(tmp_path):
    for kw in (dict(n_patients=0), dict(valid_frac=1.5), dict(size=10)):
        with pytest.raises(DataError): synth_mura(tmp_path, progress=False, **kw)
