"""No DICOM file can crash kneeai (issue 13): a seeded corpus of corrupted files through every reader, in one process.

The corpus (built once per session, 384 files) corrupts small real files of every transfer syntax pydicom ships
and kneeai's synthetic radiographs of every syntax it writes: truncation, byte flips in the header and in the pixel
data, wrong BitsAllocated/BitsStored/Rows/Columns/SamplesPerPixel, missing PixelData, and garbage fragments under every
compressed transfer syntax pydicom has a decoder for. Each file goes through `dcm2float`, `dicom_tags`, `deidentify`
and `preprocess_folder` in this one pytest process: a native crash of a decoder would end it; any exception other than
`DicomError` fails the test; so does a decoded image whose shape is not the image's true shape (a silent wrong result).

Counts of `dcm2float` on the 384 files before the fix (commit f87e0e5, a new child process after each crash): 114 read,
241 DicomError, 14 aborts of the whole process (SIGABRT in gdcm), 15 silent wrong shapes (e.g. 1x64 from a 64x64
JPEG-LS image whose Rows was set to 1); `dicom_tags` raised NotImplementedError on 3. After: 113 read, 271 DicomError,
nothing else, in one process; `deidentify` and `preprocess_folder` only DicomError/failed rows.
`python tests/test_dicom_fuzz.py DIR` writes the corpus to DIR; `... DIR --count` counts the outcomes with the kneeai
on the path, in a child process restarted after each crash (the before counts: `PYTHONPATH=<old kneeai> ...`, run
outside the checkout)."""
import io, signal, subprocess, sys, warnings
from pathlib import Path
import numpy as np, pytest
pydicom = pytest.importorskip('pydicom')
from pydicom.encaps import encapsulate
from pydicom.uid import (UID, JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1, JPEGLSLossless,
                         JPEGLSNearLossless, JPEG2000Lossless, JPEG2000, HTJ2KLossless, HTJ2KLosslessRPCL, HTJ2K, RLELossless)
from kneeai.core import DicomError

pytestmark = pytest.mark.filterwarnings('ignore')

COMPRESSED = (JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1, JPEGLSLossless, JPEGLSNearLossless,
              JPEG2000Lossless, JPEG2000, HTJ2KLossless, HTJ2KLosslessRPCL, HTJ2K, RLELossless)
PYDICOM_FILES = ('MR_small_jpeg_ls_lossless.dcm', 'JPEGLSNearLossless_16.dcm', 'MR_small_jp2klossless.dcm', 'SC_rgb_gdcm_KY.dcm',
                 'SC_rgb_dcmtk_+eb+cy+n2.dcm', 'SC_rgb_jpeg_gdcm.dcm', 'SC_rgb_rle_2frame.dcm', 'SC_rgb_small_odd_big_endian.dcm')

def _pixel_offset(raw:bytes) -> int:
    "Where the PixelData element starts in a file (little or big endian); the file's end if it has none"
    i = max(raw.rfind(b'\xe0\x7f\x10\x00'), raw.rfind(b'\x7f\xe0\x00\x10'))
    return i if i > 0 else len(raw)

def _save(ds) -> bytes:
    b = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        ds.save_as(b, enforce_file_format=False)
    return b.getvalue()

def _bases() -> dict:
    "name -> (file bytes, true (rows, cols)): pydicom's small files and kneeai's synthetic radiographs (64 px)"
    from pydicom.data import get_testdata_file
    from kneeai.synthetic_radiographs import radiograph_plan, synth_radiograph_row, radiograph_dataset, writable_transfer_syntaxes
    res = {}
    for name in PYDICOM_FILES:
        ds = pydicom.dcmread(get_testdata_file(name))
        res[name] = (Path(get_testdata_file(name)).read_bytes(), (int(ds.Rows), int(ds.Columns)))
    for ts in writable_transfer_syntaxes():
        row = radiograph_plan(1, seed=0, transfer_syntaxes={ts: 1}).iloc[0]
        px,meta = synth_radiograph_row(row, 0, 64)
        b = io.BytesIO(); radiograph_dataset(px, meta, row, 0).save_as(b, enforce_file_format=True)
        res[f'synthetic_{ts}.dcm'] = (b.getvalue(), px.shape)
    return res

def _tag_variants(ds, g) -> list:
    "(label, dataset) pairs with one image tag changed"
    r,c,ba = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
    changes = [('Rows', 2*r), ('Rows', max(r//2, 1)), ('Rows', 1), ('Rows', r+1), ('Columns', 2*c), ('Columns', max(c//2, 1)),
               ('Rows', 0), ('BitsAllocated', 8 if ba != 8 else 16), ('BitsAllocated', 32), ('BitsStored', ba + 4),
               ('SamplesPerPixel', 3 if int(ds.SamplesPerPixel) == 1 else 1), ('NumberOfFrames', 3)]
    out = []
    for kw,v in changes:
        d = pydicom.dcmread(io.BytesIO(_save(ds)))
        setattr(d, kw, v)
        out.append((f'{kw}={v}', d))
    d = pydicom.dcmread(io.BytesIO(_save(ds))); del d.PixelData; out.append(('no PixelData', d))
    return out

def _garbage(base_ds, ts, g, codestreams) -> list:
    "(label, dataset) pairs: `base_ds` relabelled `ts`, its pixel data replaced by garbage or by another syntax's codestream"
    other = sorted(k for k in codestreams if k != UID(ts).name)[int(g.integers(0, len(codestreams) - 1))]
    frags = [('random', [g.bytes(int(g.integers(2, 3000)))]), ('SOI+random', [b'\xff\xd8\xff' + g.bytes(400)]),
             ('SOC+random', [b'\xff\x4f\xff\x51' + g.bytes(400)]), ('RLE header+random', [np.array([1, 64] + [0]*14, '<u4').tobytes() + g.bytes(300)]),
             (f'{other} codestream', [codestreams[other]])]
    out = []
    for label,fr in frags:
        d = pydicom.dcmread(io.BytesIO(_save(base_ds)))
        d.file_meta.TransferSyntaxUID = ts
        d.PixelData = encapsulate(fr)
        d['PixelData'].VR = 'OB'; d['PixelData'].is_undefined_length = True
        out.append((f'{UID(ts).name}: {label}', d))
    return out

def _codestreams(bases) -> dict:
    "The first fragment of each compressed base file, by transfer syntax name"
    res = {}
    for name,(raw,_) in bases.items():
        ds = pydicom.dcmread(io.BytesIO(raw))
        ts = ds.file_meta.TransferSyntaxUID
        if ts.is_encapsulated and ts.name not in res:
            res[ts.name] = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=int(ds.get('NumberOfFrames') or 1)))
    return res

def build_corpus(dest:Path, seed:int=13) -> list:
    "Write the corrupted files under `dest`; returns (file, true (rows, cols), label) triples"
    dest.mkdir(parents=True, exist_ok=True)
    bases = _bases()
    items = []
    def add(name, data, shape, label):
        fn = dest/f'{len(items):04d}_{Path(name).stem}.dcm'
        fn.write_bytes(data)
        items.append((fn, shape, f'{name}: {label}'))
    for k,(name,(raw,shape)) in enumerate(sorted(bases.items())):
        g = np.random.default_rng([seed, k])
        px = _pixel_offset(raw)
        for i in range(2): add(name, raw[:int(g.integers(132, len(raw)))], shape, f'truncated #{i}')
        add(name, raw[:px + 20], shape, 'truncated in the pixel data header')
        for i in range(5):   # flips in the header (after the preamble and the DICM marker)
            b = bytearray(raw); j = int(g.integers(132, px)); b[j] ^= int(g.integers(1, 256)); add(name, bytes(b), shape, f'header byte {j} flipped')
        for i in range(5):   # flips in the pixel data element (tag, length, fragments, codestream)
            b = bytearray(raw); j = int(g.integers(px, len(raw))); b[j] ^= int(g.integers(1, 256)); add(name, bytes(b), shape, f'pixel byte {j} flipped')
        b = bytearray(raw)
        for j in g.integers(px + 16, len(raw), 8): b[j] = int(g.integers(0, 256))
        add(name, bytes(b), shape, '8 pixel bytes replaced')
        ds = pydicom.dcmread(io.BytesIO(raw))
        for label,d in _tag_variants(ds, g): add(name, _save(d), shape, label)
    cs = _codestreams(bases)
    base_name = 'synthetic_explicit.dcm'
    base = pydicom.dcmread(io.BytesIO(bases[base_name][0]))
    for k,ts in enumerate(COMPRESSED):
        for label,d in _garbage(base, ts, np.random.default_rng([seed, 100, k]), cs): add(base_name, _save(d), bases[base_name][1], label)
    return items

def _outcome(fn, shape) -> str:
    "'read', 'DicomError', 'wrong shape ...' or 'other ...' for one call of `dcm2float`"
    from kneeai.dicom import dcm2float
    try: a = dcm2float(fn)
    except DicomError: return 'DicomError'
    except Exception as e: return f'other {type(e).__name__}: {e}'
    return 'read' if a.shape == tuple(shape) else f'wrong shape {a.shape} (true {tuple(shape)})'

def count_in_subprocesses(items) -> dict:
    "Counts of `dcm2float`'s and `dicom_tags`' outcomes, one child reading the files in turn, a new one after each crash"
    from collections import Counter
    code = ('import sys, warnings; warnings.simplefilter("ignore"); sys.path.insert(0, sys.argv[1]); from test_dicom_fuzz import _outcome\n'
            'from kneeai.core import DicomError\nfrom kneeai.deid import dicom_tags\n'
            'for line in sys.stdin:\n'
            '    fn,shape = line.rstrip("\\n").split("\\t"); print("start", flush=True)\n'
            '    r = _outcome(fn, tuple(int(x) for x in shape.split(",")))\n'
            '    try: dicom_tags(fn); t = "tags ok"\n'
            '    except DicomError: t = "tags DicomError"\n'
            '    except Exception as e: t = f"tags other {type(e).__name__}"\n'
            '    print(r.replace("\\n", " ") + "\\t" + t, flush=True)\n')
    res,i = Counter(),0
    while i < len(items):
        todo = ''.join(f'{fn}\t{",".join(map(str, shape))}\n' for fn,shape,_ in items[i:])
        p = subprocess.run([sys.executable, '-c', code, str(Path(__file__).parent)], input=todo, capture_output=True, text=True, cwd='/')
        lines = p.stdout.splitlines()
        for l in lines:
            if l == 'start': continue
            r,t = l.split('\t'); res[r.split(' (')[0] if r.startswith('wrong') else r.split(':')[0]] += 1; res[t] += 1
            if not r.startswith(('read', 'DicomError')) or 'other' in t: print(r, t, '|', items[i][2], flush=True)
            i += 1
        if p.returncode != 0:
            res[f'crash (signal {signal.Signals(-p.returncode).name})' if p.returncode < 0 else f'crash rc {p.returncode}'] += 1
            print('crash', p.returncode, '|', items[i][2], flush=True)
            i += 1
    return dict(res)


@pytest.fixture(scope='session')
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp('fuzz')
    return d, build_corpus(d/'src')

def test_corpus_is_big_and_covers_every_compressed_syntax(corpus):
    _,items = corpus
    assert len(items) >= 300
    labels = ' '.join(l for _,_,l in items)
    for ts in COMPRESSED: assert UID(ts).name in labels

def test_every_reader_survives_the_corpus(corpus):
    from kneeai.dicom import dcm2float
    from kneeai.deid import dicom_tags, deidentify
    from kneeai.preprocess import preprocess_folder
    d,items = corpus
    out = d/'deid'; out.mkdir(exist_ok=True)
    bad,counts = [],dict(read=0, dicom_error=0)
    for fn,shape,label in items:
        try:
            a = dcm2float(fn)
            counts['read'] += 1
            if a.shape != tuple(shape): bad.append(f'{label}: silent wrong shape {a.shape}, the image is {tuple(shape)}')
        except DicomError: counts['dicom_error'] += 1
        except Exception as e: bad.append(f'{label}: dcm2float raised {type(e).__name__}: {e}')
        for f,args in ((dicom_tags, ()), (deidentify, (out,))):
            try: f(fn, *args)
            except DicomError: pass
            except Exception as e: bad.append(f'{label}: {f.__name__} raised {type(e).__name__}: {e}')
    df = preprocess_folder(d/'src', d/'prep', size=32, n_workers=0, progress=False)
    print('\nfuzz counts:', counts, {k: int(v) for k,v in df.status.value_counts().items()})
    assert not bad, '\n'.join(bad)
    assert len(df) == len(items) and set(df.status) <= {'ok', 'failed'}
    other = df.reason.str.match(r'^[A-Za-z.]+(Error|Exception):')   # what _prep_one writes for an exception that is not kneeai's
    assert not other.any(), df.reason[other].tolist()
    assert (df.status == 'ok').sum() <= counts['read']

if __name__ == '__main__':
    items = build_corpus(Path(sys.argv[1]))
    print(len(items), 'files')
    if '--count' in sys.argv: print(count_in_subprocesses(items))
