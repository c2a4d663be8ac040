"""Multi-view study model against an image-level model averaged per study, on synthetic knee studies whose fracture
shows in one view only for a known share of the fractured studies (`synth_radiographs(one_view_rate=...)`).

Same data, test studies (whole patients), body (`small_cnn`), input size, epochs, learning rate and seed for both:
- image level: `train_radiographs` on one row per image labelled with its study's label, its test images' fracture
  probabilities averaged per study (`study_probs`, mean);
- multi view: `train_multiview` (one shared body, masked mean over the views present) on the same rows grouped by study.
Prints, per seed and pooled, the study-level fracture AUC with its 95 % bootstrap interval (`radiograph_report`, 2000
resamples over studies), on all test studies and on the negatives plus the fractures seen in one view only.
Run: .venv/bin/python bench/multiview.py [--n 1000] [--size 128] [--epochs 15] [--seeds 0,1,2] [--one-view-rate 0.5] [--pool attention] [--models image,multi]
"""
import argparse, io, os, sys, time, tempfile, warnings
from contextlib import redirect_stdout
from pathlib import Path
import numpy as np, pandas as pd, torch
warnings.filterwarnings('ignore')
from kneeai.synthetic_radiographs import synth_radiographs
from kneeai.radiographs import patient_split
from kneeai.radiograph_train import train_radiographs, study_probs
from kneeai.multiview import train_multiview, study_table
from kneeai.metrics import radiograph_report

def auc_ci(y, p1, seed):
    "Study AUC (est, lo, hi) of the fracture probabilities `p1`"
    r = radiograph_report(np.asarray(y), np.c_[1-np.asarray(p1), p1], [0, 1], n_boot=2000, seed=seed)
    return tuple(float(r.loc['1', ('auc', k)]) for k in ('est', 'lo', 'hi'))

def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument('--n', type=int, default=1000); ap.add_argument('--size', type=int, default=128)
    ap.add_argument('--synth-size', type=int, default=256); ap.add_argument('--epochs', type=int, default=15)
    ap.add_argument('--lr', type=float, default=3e-3); ap.add_argument('--seeds', default='0,1,2')
    ap.add_argument('--one-view-rate', type=float, default=.5); ap.add_argument('--data-seed', type=int, default=11)
    ap.add_argument('--threads', type=int, default=1); ap.add_argument('--out', type=Path, default=None)
    ap.add_argument('--pool', default='mean', choices=('mean', 'attention')); ap.add_argument('--models', default='image,multi')
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    tmp = a.out or Path(tempfile.mkdtemp())
    t0,c0 = time.time(),time.process_time()
    df = synth_radiographs(tmp/'xr', n=a.n, size=a.synth_size, seed=a.data_seed, fracture_rate=.5, one_view_rate=a.one_view_rate, progress=False)
    st = study_table(df)
    test_pat = set(st.patient_id[patient_split(st, .3, seed=0, by='fracture')])
    df['split'] = np.where(df.patient_id.isin(test_pat), 'test', 'train')
    tst = study_table(df)[lambda d: d.split == 'test'].set_index('study_id')
    lv = df.groupby('study_id').lesion_views.first()
    one = (tst.fracture == 0) | lv.loc[tst.index].isin(['AP', 'LAT'])
    fs = st.set_index('study_id')[lambda d: d.fracture == 1]
    two = fs.views.map(lambda v: len(set(v)) > 1)
    print(f'{len(df)} images, {len(st)} studies ({len(fs)} fractured; {int(two.sum())} of them with both views, '
          f"{int((two & lv[fs.index].isin(['AP', 'LAT'])).sum())} of those showing it in one view only); "
          f'test: {len(tst)} studies ({int(tst.fracture.sum())} fractured, {int((one & (tst.fracture == 1)).sum())} seen in one view only, '
          f'hidden from the other or in a study of one view); '
          f'synthesis {time.time()-t0:.0f} s', flush=True)
    common = dict(arch='small_cnn', size=a.size, epochs=a.epochs, lr=a.lr, device='cpu', n_boot=10, progress=False, csv_log=False)
    rows = []
    for seed in map(int, a.seeds.split(',')):
        for name in [n for n,k in (('image level, mean per study', 'image'), (f'multi-view ({a.pool})', 'multi')) if k in a.models.split(',')]:
            c1,w1 = time.process_time(),time.time()
            with redirect_stdout(io.StringIO()):
                if name.startswith('multi-view'):
                    res = train_multiview(df, tmp/f'mv{seed}', view_col='view', pool=a.pool, bs=8, seed=seed, images=tmp/'xr', **common)
                    pr = pd.read_csv(tmp/f'mv{seed}'/'test_predictions.csv').set_index('study_id')['1']
                else:
                    res = train_radiographs(df, tmp/f'im{seed}', bs=16, seed=seed, images=tmp/'xr', **common)
                    ip = pd.read_csv(tmp/f'im{seed}'/'test_predictions.csv')
                    ip['study'] = ip.file.map(df.set_index('file').study_id)
                    pr = study_probs(ip[['1', 'study']], 'study', how=('mean',))[('1', 'mean')]
            pr = pr.loc[tst.index]
            rows.append(dict(model=name, seed=seed, auc=auc_ci(tst.fracture, pr, seed), auc_one_view=auc_ci(tst.fracture[one], pr[one], seed),
                             cpu_s=time.process_time()-c1, wall_s=time.time()-w1))
            r = rows[-1]
            print(f"seed {seed} {name:28s} study AUC {r['auc'][0]:.3f} ({r['auc'][1]:.3f}-{r['auc'][2]:.3f}); "
                  f"one-view fractures vs negatives {r['auc_one_view'][0]:.3f} ({r['auc_one_view'][1]:.3f}-{r['auc_one_view'][2]:.3f}); "
                  f"{r['cpu_s']:.0f} s CPU, {r['wall_s']:.0f} s wall; load {os.getloadavg()[0]:.2f}", flush=True)
    res = pd.DataFrame(rows)
    print(res.assign(auc=res.auc.map(lambda t: t[0]), auc_one_view=res.auc_one_view.map(lambda t: t[0]))
             .groupby('model')[['auc', 'auc_one_view']].agg(['mean', 'std']).round(3).to_string())
    print(f'total {time.process_time()-c0:.0f} s CPU, {time.time()-t0:.0f} s wall; load average {", ".join(f"{x:.2f}" for x in os.getloadavg())}')
    return res

if __name__ == '__main__': main()
