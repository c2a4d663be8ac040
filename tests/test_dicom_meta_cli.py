"`kneeai dicom-meta` on several folders: every DICOM file of every folder is one row (issue 12)."
import io
from pathlib import Path
import pandas as pd, pytest
from kneeai.synthetic_radiographs import synth_radiographs

from conftest import kneeai_cmd

@pytest.fixture(scope='module')
def two_folders(tmp_path_factory):
    "Two folders of small synthetic DICOM radiographs (different seeds, so different files)"
    root = tmp_path_factory.mktemp('dicoms')
    for i,(name,n) in enumerate((('site_a', 3), ('site_b', 4))):
        synth_radiographs(root/name, n=n, seed=i, size=64, progress=False)
    return root/'site_a', root/'site_b'

def _dcms(d): return sorted(str(p) for p in Path(d).rglob('*.dcm'))

def test_dicom_meta_two_folders(two_folders):
    a,b = two_folders
    r = kneeai_cmd('dicom-meta', a, b, '--quiet')
    assert r.returncode == 0, r.stderr[-2000:]
    df = pd.read_csv(io.StringIO(r.stdout))
    assert len(df) == len(_dcms(a) + _dcms(b)) == 7 and len(_dcms(a)) == 3   # one row per file of both folders
    assert not set(df.fname) & set(_dcms(a) + _dcms(b))                       # without --phi the names are pseudonyms
    assert df.error.isna().all(), df.error.dropna().tolist()
    assert (df.Modality.isin(['CR', 'DX'])).all() and 'PatientName' not in df

def test_dicom_meta_folder_and_file(two_folders, tmp_path):
    "A folder and a file together; the CSV written with --out"
    a,b = two_folders
    out = tmp_path/'meta.csv'
    r = kneeai_cmd('dicom-meta', a, _dcms(b)[0], '--quiet', '--phi', '--out', out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(pd.read_csv(out).fname) == sorted(_dcms(a) + _dcms(b)[:1])
    assert '4 files, 0 unreadable' in r.stdout
