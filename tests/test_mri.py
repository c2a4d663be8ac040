"""Tests of `kneeai.mri` (issue 22): synthetic exams written as DICOM MR studies and imported again, the rules that choose a
series per plane, `kneeai predict`/`import-mri` on study folders, and pydicom's own MR files."""
import json, shutil, warnings
from pathlib import Path
from types import SimpleNamespace
import numpy as np, pandas as pd, pytest, pydicom

from conftest import kneeai_cmd
from kneeai.core import PLANES, DicomError, VolumeError
from kneeai.mri import exam_from_dicom, mri_series, write_mr_study, import_mri

@pytest.fixture(scope='module')
def exam():
    "A small synthetic exam (32 px, 12 slices per plane)"
    from kneeai.synthetic import synth_exam
    ex = synth_exam(0, size=32, slices=12)
    return {p: ex[p] for p in PLANES}

@pytest.mark.parametrize('multiframe', [False, True])
def test_round_trip_equals_the_volumes(exam, tmp_path, multiframe):
    "Written as a study (localiser, decoy sagittal, shuffled names, flipped and transposed storage) and read back: the same volumes"
    series = write_mr_study(exam, tmp_path/'st', seed=3, multiframe=multiframe)
    names = sorted(f.name for f in (tmp_path/'st').iterdir())
    assert len(names) == (3 + 4 if multiframe else 3 + 4*12) and names[0].startswith('IM')  # no slice order in the names
    ex = exam_from_dicom(tmp_path/'st')
    for p in PLANES:
        assert ex[p].dtype == np.uint8 and ex[p].shape == exam[p].shape
        np.testing.assert_array_equal(ex[p], exam[p])  # order, orientation and values (min-max scaling of 0..255 data is exact)
        assert ex.manifest['planes'][p]['issues'] == ''
    assert ex.manifest['planes']['sagittal']['series_number'] == 2  # the T2 fat-sat, not the PD decoy (series 5)
    assert 'best match for T2 fat-sat' in ex.manifest['planes']['sagittal']['reason'] and 'series 5: PD' in ex.manifest['planes']['sagittal']['reason']
    assert ex.manifest['planes']['axial']['rows_and_columns_swapped'] and not ex.manifest['planes']['sagittal']['rows_and_columns_swapped']
    uids = {str(pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID) for f in (tmp_path/'st').iterdir()}
    assert not uids & {r['series_uid'] for r in ex.manifest['planes'].values()}  # pseudonymous by default
    assert exam_from_dicom(tmp_path/'st', phi=True).manifest['planes']['sagittal']['series_uid'] in uids

def test_localiser_rejected_and_sizes(exam, tmp_path):
    write_mr_study(exam, tmp_path/'st', seed=4)
    s = mri_series(tmp_path/'st')
    loc = s[s.series_number == 1].iloc[0]
    assert loc.status == 'rejected' and 'localiser' in loc.reason
    assert list(s[s.status == 'usable'].plane) == ['sagittal', 'coronal', 'axial', 'sagittal']
    assert 'too short' in mri_series(tmp_path/'st', min_slices=13).reason.iloc[1]
    ex = exam_from_dicom(tmp_path/'st', size=48)  # in-plane resampling to the model's size
    assert {v.shape for v in ex.values()} == {(12, 48, 48)} and all(v.max() == 255 and v.min() == 0 for v in ex.values())

def test_three_plane_localiser_without_image_type(exam, tmp_path):
    "A localiser that does not say so is still rejected: its slices lie in three orientations"
    write_mr_study(exam, tmp_path/'st', seed=5, decoy=False)
    for f in (tmp_path/'st').iterdir():
        ds = pydicom.dcmread(f)
        if ds.SeriesNumber == 1: ds.ImageType = ['ORIGINAL', 'PRIMARY', 'M']; ds.save_as(f)
    s = mri_series(tmp_path/'st')
    assert 'in 3 orientations' in s.reason.iloc[0]

def test_missing_slice_reported(exam, tmp_path):
    write_mr_study(exam, tmp_path/'st', seed=6, missing=('coronal', 5))
    ex = exam_from_dicom(tmp_path/'st')
    assert 'gap of 1 missing slice(s) after slice 4' in ex.manifest['planes']['coronal']['issues']
    np.testing.assert_array_equal(ex['coronal'], np.delete(exam['coronal'], 5, 0))

def test_duplicates_and_uneven_spacing():
    from kneeai.mri import stack_issues
    order,issues = stack_issues(np.array([3., 0., 6., 3., 9.]))
    assert list(order) == [1, 0, 2, 4] and 'duplicate' in issues[0]
    assert 'uneven spacing' in stack_issues(np.array([0., 3., 6., 9.5, 12.5]))[1][0]

def test_plane_from_orientation_not_description(exam, tmp_path):
    "The sagittal series described as coronal (and the coronal as axial) are classified by ImageOrientationPatient"
    write_mr_study(exam, tmp_path/'st', seed=7, decoy=False, localiser=False)
    for f in (tmp_path/'st').iterdir():
        ds = pydicom.dcmread(f)
        ds.SeriesDescription = {1: 'COR T2 FS', 2: 'AX T1', 3: 'SAG PD FS'}[ds.SeriesNumber]; ds.save_as(f)
    assert list(mri_series(tmp_path/'st').plane) == list(PLANES)
    ex = exam_from_dicom(tmp_path/'st')
    for p in PLANES: np.testing.assert_array_equal(ex[p], exam[p])

def test_protocol_and_series_override(exam, tmp_path):
    write_mr_study(exam, tmp_path/'st', seed=8)
    assert exam_from_dicom(tmp_path/'st', protocol={'sagittal': 'PD'}).manifest['planes']['sagittal']['series_number'] == 5
    ex = exam_from_dicom(tmp_path/'st', series={'sagittal': 5})
    assert 'chosen by the user' in ex.manifest['planes']['sagittal']['reason']
    np.testing.assert_array_equal(ex['sagittal'], 255 - exam['sagittal'])  # the decoy's pixels
    with pytest.raises(VolumeError, match='cannot be the sagittal volume'): exam_from_dicom(tmp_path/'st', series={'sagittal': 3})

def test_zip_and_import_mri(exam, tmp_path):
    "A folder of studies (one a zip, one broken): imported, resumable, a failed study named and the exit status 1"
    src = tmp_path/'src'
    write_mr_study(exam, src/'a', seed=9)
    write_mr_study(exam, tmp_path/'b', seed=10, multiframe=True)
    shutil.make_archive(src/'b', 'zip', tmp_path/'b')
    write_mr_study({'sagittal': exam['sagittal']}, src/'c', seed=11)  # no coronal or axial series
    r = kneeai_cmd('import-mri', src, tmp_path/'out', '--size', '32', '--workers', '0', '--quiet')
    assert r.returncode == 1 and 'no usable coronal series' in r.stderr, r.stderr
    df = pd.read_csv(tmp_path/'out'/'manifest.csv', keep_default_na=False)
    assert list(df.status) == ['ok', 'ok', 'failed'] and list(df.study) == ['a', 'b.zip', 'c']
    for s in ('a', 'b'):
        for p in PLANES: np.testing.assert_array_equal(np.load(tmp_path/'out'/s/f'{p}.npy'), exam[p])
        man = json.loads((tmp_path/'out'/s/'exam.json').read_text())
        assert man['planes']['sagittal']['series_number'] == 2 and man['rejected'][0]['series_number'] == 1
    again = import_mri(src, tmp_path/'out', size=32, n_workers=0, progress=False)
    assert list(again.status) == ['skipped', 'skipped', 'failed']

def test_predict_and_explain_on_a_study(exam, tmp_path):
    "`kneeai predict --model M STUDY` gives the probabilities of the MRNet-layout exam the study was written from; `explain` reads it too"
    import torch
    from kneeai.models import TripleMRNet
    from kneeai.learner import save_model
    from kneeai.volumes import data_config
    torch.manual_seed(0)
    learn = SimpleNamespace(model=TripleMRNet('small_cnn', in_chans=1), thresholds={'abnormal': .5, 'acl': .5, 'meniscus': .5},
                            model_config=dict(kind='TripleMRNet', arch='small_cnn', planes=list(PLANES), n_out=3, shared=False, in_chans=1),
                            dls=SimpleNamespace(data_config=data_config(size=32)))
    save_model(learn, tmp_path/'model')
    (tmp_path/'exam').mkdir()
    for p in PLANES: np.save(tmp_path/'exam'/f'{p}.npy', exam[p])
    write_mr_study(exam, tmp_path/'study', seed=12, multiframe=True)
    r = kneeai_cmd('predict', '--model', tmp_path/'model', tmp_path/'exam', tmp_path/'study')
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert set(res) == {'exam', 'study'}
    for t in ('abnormal', 'acl', 'meniscus'): assert abs(res['exam'][t] - res['study'][t]) < 1e-6
    r = kneeai_cmd('explain', '--model', tmp_path/'model', tmp_path/'study', '--out', tmp_path/'cams', '--task', 'acl', '--top', '1')
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path/'cams'/'study'/'explain.json').read_text())
    assert abs(summary['probs']['acl'] - res['study']['acl']) < 1e-4 and (tmp_path/'cams'/'study'/'acl'/'mosaic.png').exists()

PYDICOM_MR = ['MR_small.dcm', 'MR_small_RLE.dcm', 'MR_small_bigendian.dcm', 'MR_small_jp2klossless.dcm', 'MR_small_padded.dcm',
              'MR_truncated.dcm', 'MR2_UNCR.dcm', 'MR-SIEMENS-DICOM-WithOverlays.dcm', 'emri_small.dcm', 'emri_small_RLE.dcm',
              'emri_small_big_endian.dcm', 'emri_small_jpeg_2k_lossless_too_short.dcm'] # by name: listing them all tries downloads (12 s offline)

def _pydicom_mr_files():
    from pydicom.data import get_testdata_file
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return [f for f in map(get_testdata_file, PYDICOM_MR) if f]

def test_pydicom_mr_files():
    "pydicom's MR test files (single slices, enhanced multi-frame without geometry, truncated, padded) give DicomError or VolumeError"
    fs = _pydicom_mr_files()
    assert any('emri_small' in f for f in fs) and any(Path(f).name == 'MR_small.dcm' for f in fs)
    errs = {}
    for f in fs:
        for kw in ({}, dict(min_slices=1, planes=('axial',))):
            try: exam_from_dicom(f, **kw)
            except (DicomError, VolumeError) as e:
                assert str(f) in str(e) or Path(f).name in str(e), str(e)
                errs[Path(f).name, bool(kw)] = str(e)
    assert all((Path(f).name, False) in errs for f in fs)  # one slice is no exam
    assert 'truncated' in errs['MR_truncated.dcm', True] and 'no ImageOrientationPatient' in errs['emri_small.dcm', True]
    assert exam_from_dicom([f for f in fs if Path(f).name == 'MR_small.dcm'][0], min_slices=1, planes=('axial',))['axial'].shape == (1, 64, 64)

def test_enhanced_per_frame_rescale(exam, tmp_path):
    "An enhanced MR file whose frames rescale differently (PixelValueTransformationSequence per frame) reads as the same volume"
    write_mr_study(exam, tmp_path/'st', seed=13, multiframe=True, localiser=False, decoy=False)
    for f in (tmp_path/'st').iterdir():
        ds = pydicom.dcmread(f)
        px = ds.pixel_array.copy()
        for k,item in enumerate(ds.PerFrameFunctionalGroupsSequence):
            slope = 2. if k % 2 else 1.
            pvt = pydicom.Dataset(); pvt.RescaleSlope,pvt.RescaleIntercept,pvt.RescaleType = slope,-100.*slope,'US'
            item.PixelValueTransformationSequence = [pvt]
            px[k] = (px[k] + 100*slope)/slope  # the same values after the frame's rescale
        ds.PixelData,ds.BitsStored,ds.HighBit = px.astype(np.uint16).tobytes(),16,15; ds.save_as(f)
    ex = exam_from_dicom(tmp_path/'st')
    for p in PLANES: np.testing.assert_array_equal(ex[p], exam[p])

def test_series_without_numbers(exam, tmp_path):
    "SeriesNumber is optional (type 2): a study without any still reads, and errors still list its series"
    write_mr_study(exam, tmp_path/'st', seed=14, localiser=False)
    for f in (tmp_path/'st').iterdir():
        ds = pydicom.dcmread(f); del ds.SeriesNumber; ds.save_as(f)
    ex = exam_from_dicom(tmp_path/'st')
    for p in PLANES: np.testing.assert_array_equal(ex[p], exam[p])
    assert ex.manifest['planes']['sagittal']['reason'].startswith('series ?: T2 fat-sat')
    with pytest.raises(VolumeError, match='no usable axial series'): exam_from_dicom(tmp_path/'st', min_slices=20, planes=('axial',))

def test_two_studies_in_one_folder(exam, tmp_path):
    write_mr_study(exam, tmp_path/'st', seed=15)
    write_mr_study(exam, tmp_path/'st'/'other', seed=16)
    with pytest.raises(VolumeError, match='holds 2 studies'): exam_from_dicom(tmp_path/'st')
