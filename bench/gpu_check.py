"""The device check: one command that measures what a GPU machine is for, and writes a JSON and a Markdown table.

What it measures, in order (each part times itself; a part that fails records its error and the others still run):
1. the notebooks' fast tests (`nbdev-test`) on this machine's default device (skipped with `--quick`);
2. MRNet training at 256 px in the reference's configuration (sagittal, acl): kneeai's recipe (batched, kornia augmentation
   on the device, `mixed_precision='auto'`, and float32) against the reference code's loop (batch size 1, augmentation in
   CPU loader workers) on the same device (`bench/mrnet_train.py`), then kneeai's default three-plane, three-task model;
   peak device memory of the training;
3. data loading alone: exams/s of kneeai's training loader (augmentation included) and of the reference's loader
   (is the device starved?);
4. inference latency per exam through `Predictor.predict_exams` (three planes, one exam per call);
5. radiograph training images/s (`radiograph_learner`, resnet18 at 224 px).
It runs unchanged on a CPU: `python bench/gpu_check.py --device cpu --quick` (tiny sizes, small_cnn, no notebooks)
proves the script works; the test run does that. Full run: `python bench/gpu_check.py` (about 5 minutes on one GPU).
"""
import argparse, json, os, subprocess, sys, tempfile, time, traceback, warnings
from pathlib import Path
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated')
import numpy as np, torch
sys.path.insert(0, str(Path(__file__).parent))
from common import load_avg, sync, reference_loader
import mrnet_train
from kneeai.core import PLANES, device_info, get_device, set_seed
from kneeai.synthetic import synth_mrnet
from kneeai.volumes import mrnet_dls, mrnet_df

def _peak_reset(dev):
    if dev.type == 'cuda': torch.cuda.reset_peak_memory_stats(dev)

def _peak_gb(dev):
    return round(torch.cuda.max_memory_allocated(dev)/2**30, 2) if dev.type == 'cuda' else None

def notebooks(timeout:int) -> dict:
    "The notebooks' fast tests with nbdev-test; rc, seconds and the failing notebooks"
    exe = Path(sys.executable).with_name('nbdev-test')
    t0 = time.perf_counter()
    try:
        p = subprocess.run([str(exe), '--n-workers', str(min(8, os.cpu_count() or 1)), '--timing'], capture_output=True,
                           text=True, timeout=timeout, cwd=Path(__file__).resolve().parents[1])
        out = p.stdout + p.stderr
        failed = [l.strip() for l in out.split('Failed On The Following Notebooks:')[-1].splitlines() if l.strip().endswith('.ipynb')] if p.returncode else []
        return dict(rc=p.returncode, seconds=round(time.perf_counter() - t0, 1), failed=failed, tail=out[-1500:])
    except subprocess.TimeoutExpired:
        return dict(rc='timeout', seconds=timeout)

def loading(data, dev, bs, workers, plane='sagittal', task='acl') -> dict:
    "Exams/s of kneeai's training loader (batch augmentation on `dev` included) and of the reference's loader, without a model"
    df = mrnet_df(data, 'train')
    dls = mrnet_dls(data, bs=bs, valid_ids=[df.id.iloc[-1]], device=dev)
    sync(dev); t0,n = time.perf_counter(),0  # loader start-up included, as in training
    for b in dls.train: n += len(b[-1])
    sync(dev); k = n/(time.perf_counter() - t0)
    t0,m = time.perf_counter(),0
    for x,*_ in reference_loader(dls.train.items, plane, task, workers): m += 1
    r = m/(time.perf_counter() - t0)
    return dict(kneeai_exams_per_s=round(k, 2), kneeai_bs=dls.train.bs, reference_exams_per_s=round(r, 2), reference_workers=workers)

def inference(data, dev, arch, n_exams) -> dict:
    "Latency per exam of `Predictor.predict_exams` (one exam per call, three planes) with a freshly saved model"
    from kneeai.train import mrnet_learner
    from kneeai.learner import save_model, Predictor
    df = mrnet_df(data, 'train')
    dls = mrnet_dls(data, bs=2, valid_ids=[df.id.iloc[-1]], device=dev)
    out = Path(tempfile.mkdtemp())
    save_model(mrnet_learner(dls, arch=arch, pretrained=False, path=out, csv_log=False), out/'model')
    pred = Predictor.load(out/'model', dev)
    exams = [{p: np.load(r[p]) for p in PLANES} for _,r in df.head(n_exams).iterrows()]
    pred.predict_exams(exams[:1])  # warm-up
    ts = []
    for e in exams:
        sync(dev); t = time.perf_counter(); pred.predict_exams([e]); sync(dev); ts.append(time.perf_counter() - t)
    return dict(ms_per_exam_median=round(1e3*float(np.median(ts)), 1), ms_per_exam_min=round(1e3*min(ts), 1), exams=len(ts),
                slices_per_exam=round(float(np.mean([sum(e[p].shape[0] for p in PLANES) for e in exams])), 1))

def radiographs(dev, n, img, size, bs, arch) -> dict:
    "Training images/s of `radiograph_learner` on synthetic radiographs (one epoch after a one-batch warm-up)"
    from kneeai.synthetic_radiographs import synth_radiographs
    from kneeai.radiographs import radiograph_dls
    from kneeai.radiograph_train import radiograph_learner
    tmp = Path(tempfile.mkdtemp())
    df = synth_radiographs(tmp/'xr', n=n, size=img, seed=0, fracture_rate=.5, progress=False)
    set_seed(0)
    dls = radiograph_dls(df, tmp/'xr', task='fracture', size=size, bs=bs, seed=0, device=dev)
    learn = radiograph_learner(dls, arch=arch, path=tmp/'run', csv_log=False)
    _peak_reset(dev)
    with warnings.catch_warnings():  # tiny validation sets hold one class: no AUC to select an epoch by
        warnings.simplefilter('ignore')
        mrnet_train.kneeai_epoch(learn, max_batches=1)
        secs,ims,_ = mrnet_train.kneeai_epoch(learn, slices=False)
    return dict(images_per_s=round(ims/secs, 2), images=ims, size=size, bs=dls.train.bs, arch=arch, peak_gb=_peak_gb(dev),
                mixed_precision=getattr(learn, 'amp_choice', {}).get('choice', 'float32'))

def markdown(res:dict) -> str:
    "The figures as a Markdown table"
    rows = [('device', res['device']), ('load average', res['load_avg_start'])]
    nb = res.get('notebooks', {})
    rows.append(('notebooks (nbdev-test)', f"rc {nb.get('rc')}, {nb.get('seconds')} s, failed: {', '.join(nb.get('failed') or []) or 'none'}" if 'rc' in nb else nb.get('skipped', nb.get('error', ''))))
    t = res.get('mrnet_train', {})
    for k,v in t.get('variants', {}).items():
        rows.append((f"MRNet training {t['size']} px {','.join(t['planes'])}/{','.join(t['tasks'])}: {k}",
                     f"{v['exams_per_s']} exams/s, {v['slices_per_s']} slices/s, {v['matmul_fraction']} of matmul"))
    if 'auto_choice' in t: rows.append(("mixed_precision='auto' chose", t['auto_choice']))
    if 'peak_gb' in t: rows.append(('peak device memory, MRNet training (GiB)', t['peak_gb']))
    d = res.get('mrnet_default', {})
    for k,v in d.get('variants', {}).items(): rows.append((f"MRNet training, kneeai default (3 planes, 3 tasks): {k}", f"{v['exams_per_s']} exams/s"))
    if 'peak_gb' in d: rows.append(('peak device memory, 3-plane model (GiB)', d['peak_gb']))
    for part,label in (('loading', 'data loading alone'), ('inference', 'inference per exam'), ('radiographs', 'radiograph training')):
        if part in res: rows.append((label, ', '.join(f'{k} {v}' for k,v in res[part].items())))
    rows += [(f'{k}: error', v['error']) for k,v in res.items() if isinstance(v, dict) and 'error' in v]
    rows.append(('total seconds', res.get('seconds')))
    return '| check | result |\n|---|---|\n' + '\n'.join(f'| {a} | {b} |' for a,b in rows) + '\n'

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--device', default=None, help='default: the best available')
    ap.add_argument('--quick', action='store_true', help='tiny sizes and small_cnn, no notebooks: proves the script runs (CPU CI)')
    ap.add_argument('--out', default='gpu_check', help='folder for gpu_check.json and gpu_check.md (default: ./gpu_check)')
    ap.add_argument('--skip-notebooks', action='store_true')
    ap.add_argument('--notebook-timeout', type=int, default=240)
    a = ap.parse_args(argv)
    t_start = time.perf_counter()
    dev = get_device(a.device)
    q = a.quick
    cfg = dict(n=3 if q else 16, size=32 if q else 256, arch='small_cnn' if q else 'alexnet', bs=4 if q else 8,
               workers=0 if q else min(11, os.cpu_count() or 1), rounds=1 if q else 2)
    res = dict(device=str(dev), device_info=device_info(), quick=q, config=cfg, load_avg_start=load_avg())
    if dev.type == 'cuda': res['gpu'] = torch.cuda.get_device_name(dev)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    def part(name, fn):
        t0 = time.perf_counter()
        try: res[name] = fn()
        except Exception as e: res[name] = dict(error=f'{type(e).__name__}: {e}', trace=traceback.format_exc()[-1500:])
        if isinstance(res[name], dict): res[name]['part_seconds'] = round(time.perf_counter() - t0, 1)
        print(f'{name}: done in {time.perf_counter() - t0:.1f} s', flush=True)
    if q or a.skip_notebooks: res['notebooks'] = dict(skipped='--quick' if q else '--skip-notebooks')
    else: part('notebooks', lambda: notebooks(a.notebook_timeout))
    data = Path(tempfile.mkdtemp())/'mrnet'
    synth_mrnet(data, n_train=cfg['n'] + 1, n_valid=1, size=cfg['size'], seed=0, progress=False,
                prevalence=dict(abnormal=.8, acl=.5, meniscus=.5))
    def train(**kw):
        _peak_reset(dev)
        r = mrnet_train.run(data, arch=cfg['arch'], bs=cfg['bs'], workers=cfg['workers'], device=dev, rounds=cfg['rounds'], log=lambda *_: None,
                            matmul_n=256 if q else 2048, **kw)
        r['peak_gb'] = _peak_gb(dev)
        return r
    part('mrnet_train', lambda: train(planes='sagittal', tasks='acl', kneeai_modes=('auto',) if q else ('auto', 'fp32')))
    if q: res['mrnet_default'] = dict(skipped='--quick (the same code path as mrnet_train)')
    else: part('mrnet_default', lambda: train(planes='all', tasks='all', kneeai_modes=('auto',), reference=False))
    part('loading', lambda: loading(data, dev, cfg['bs'], cfg['workers']))
    part('inference', lambda: inference(data, dev, cfg['arch'], 1 if q else 8))
    part('radiographs', lambda: radiographs(dev, 8 if q else 96, 64 if q else 320, 32 if q else 224, 4 if q else 32,
                                            'small_cnn' if q else 'resnet18'))
    res['seconds'] = round(time.perf_counter() - t_start, 1)
    res['load_avg_end'] = load_avg()
    (out/'gpu_check.json').write_text(json.dumps(res, indent=2, default=str))
    (out/'gpu_check.md').write_text(markdown(res))
    print(markdown(res))
    return res

if __name__ == '__main__': main()
