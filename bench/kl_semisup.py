"""Semi-supervised KL grading on real knee radiographs (issue 19): FixMatch and MixMatch vs supervised-only.

The protocol of bench/kl_common.py: the held-out TEST knees (300 knees of 150 patients, scored once per finished
model), the POOL (1,200 knees of 600 patients), `labelled_mask(pool, frac, seed)` for the labelled patients, the
rest of the pool unlabelled (its hidden grades only score the pseudo-labels). Every method trains the KL tutorial's
model (small_cnn, CORAL head, balanced batches k=1, flip, one-cycle at 3e-3, the same labelled batches) for the same
number of optimizer steps, with the `EMA` of its weights and no model selection. FixMatch: mu unlabelled images per
labelled one, FreeMatch's self-adaptive threshold, distribution alignment; MixMatch: K=2, T=0.5, alpha 0.75,
lambda_u 100 (ramped over 40 % of the run), distribution alignment. One thread; each finished run is appended to
OUT/runs.csv at once (its diagnostics per epoch to OUT/diag.csv) and runs already there are skipped.

    .venv/bin/python bench/kl_semisup.py --time                     # CPU s/step of each method (20 steps), to set --steps
    .venv/bin/python bench/kl_semisup.py --steps 1000 --size 96     # the study (18 runs), resumable
    .venv/bin/python bench/kl_semisup.py --table                    # the table and nbs/images/kl_semisup.png from OUT
"""
import argparse, os, sys, time, json, tempfile, warnings
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
from kl_common import kl_table, pool_and_test, labelled_mask, kl_scores, fmt, load

METHODS = ('supervised', 'fixmatch', 'mixmatch')
LOGGED = ('loss_u', 'mask_rate', 'pl_acc', 'pl_acc_all', 'tau', 'guess_acc', 'lambda_u')  # the callbacks' diagnostics
RUN_COLS = ['fraction', 'method', 'seed', 'n_labelled', 'n_unlabelled', 'size', 'bs', 'mu', 'steps', 'cpu_s', 'wall_s', 's_per_step',
            'load_start', 'load_end', 'qwk', 'qwk_lo', 'qwk_hi', 'auc2', 'auc2_lo', 'auc2_hi', 'acc', 'mauc', 'n', *[f'last_{k}' for k in LOGGED],
            'test_pred', 'unl_pred']  # the counts of predicted grades 0..4 on the test knees and on the unlabelled pool
DIAG_COLS = ['fraction', 'method', 'seed', 'epoch', 'step', *LOGGED]
FIG = Path(__file__).parent.parent/'nbs'/'images'/'kl_semisup.png'

class _StepClock:
    "CPU seconds between consecutive training steps (data loading and the callbacks' work included)"
    def __init__(self): self.t,self.times = None,[]
    def __call__(self):
        t = time.process_time()
        if self.t is not None: self.times.append(t - self.t)
        self.t = t

def _append(fn, rows, cols):
    "Add `rows` to the csv `fn` (rewritten whole, through a temporary file, so that a cut-off never leaves half a file)"
    import pandas as pd
    new = pd.DataFrame(rows).reindex(columns=cols)
    if fn.exists(): new = pd.concat([pd.read_csv(fn), new], ignore_index=True).reindex(columns=cols)
    tmp = fn.with_suffix('.tmp'); new.to_csv(tmp, index=False); tmp.replace(fn)

def run(method, frac, seed, a, pool, test, kl, tmp, steps=None):
    "Train `method` on `frac` of the pool's labels and score the test knees: one row of results, the diagnostics"
    import numpy as np, pandas as pd, torch
    from fastai.callback.core import Callback
    from kneeai.core import set_seed
    from kneeai.radiographs import radiograph_dls
    from kneeai.radiograph_train import radiograph_learner
    from kneeai.learner import SaveBestModel
    from kneeai.semisup import FixMatch, MixMatch, EMA, _NoValidation
    steps = steps or a.steps
    lab = labelled_mask(pool, frac, seed)
    d = pd.concat([pool[lab], test]).assign(is_valid=np.r_[np.zeros(lab.sum(), bool), np.ones(len(test), bool)])
    set_seed(seed)
    dls = radiograph_dls(d, kl, fn_col='path', task='kl', valid_col='is_valid', size=a.size, bs=a.bs, flip=True, device='cpu', seed=seed)
    learn = radiograph_learner(dls, 'small_cnn', loss='coral', sampler='batch', sampler_kwargs=dict(k=1, seed=seed),
                               path=tmp, csv_log=False, mixed_precision=False)
    learn.remove_cbs(learn.cbs.filter(lambda c: isinstance(c, SaveBestModel)))
    unl = pool[~lab]
    cb = None
    if method == 'fixmatch':
        cb = FixMatch(learn.dls.test_dl(unl, with_labels=True, bs=a.mu*a.bs), mu=a.mu, tau='adaptive', tau_momentum=a.momentum,
                      dist_align=True, da_momentum=a.momentum, aug_labelled=False)
    if method == 'mixmatch':
        cb = MixMatch(learn.dls.test_dl(unl, with_labels=True, bs=a.bs), dist_align=True, da_momentum=a.momentum)
    clock = _StepClock()
    class Clock(Callback):
        order = 99
        def after_batch(self):
            if self.training: clock()
    cbs = [_NoValidation(), EMA(), Clock()] + ([cb] if cb is not None else [])
    n_per = len(learn.dls.train)
    n_epoch = max(1, int(round(steps/n_per)))
    c0,w0,l0 = time.process_time(),time.perf_counter(),os.getloadavg()[0]
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(n_epoch, a.lr, cbs=cbs)
    cpu,wall = time.process_time() - c0,time.perf_counter() - w0
    with learn.no_bar(): probs,y = learn.get_preds(dl=learn.dls.valid)
    s = kl_scores(y.numpy(), probs.numpy(), seed=seed)
    with learn.no_bar(): pu,_ = learn.get_preds(dl=learn.dls.test_dl(unl))
    def counts(p): return ' '.join(map(str, np.bincount(p.argmax(1).numpy(), minlength=5)))  # predicted grades 0..4
    row = dict(fraction=frac, method=method, seed=seed, n_labelled=int(lab.sum()), n_unlabelled=int((~lab).sum()), size=a.size,
               bs=a.bs, mu=a.mu if method == 'fixmatch' else np.nan, steps=n_epoch*n_per, cpu_s=round(cpu, 1), wall_s=round(wall, 1),
               s_per_step=float(np.median(clock.times[5:] or clock.times)), load_start=round(l0, 2), load_end=round(os.getloadavg()[0], 2),
               test_pred=counts(probs), unl_pred=counts(pu), **s)
    diag = []
    if cb is not None:
        h = pd.DataFrame(cb.history)
        row.update({f'last_{k}': float(v) for k,v in h.iloc[-max(1, len(h)//10):].mean().items()})  # the last tenth of the run
        diag = [dict(fraction=frac, method=method, seed=seed, epoch=i, step=(i + 1)*n_per, **r) for i,r in enumerate(cb.history)]
    return row, diag

def time_steps(a, pool, test, kl, tmp):
    "CPU seconds per step of each method: 20 steps at 10 % labels, one thread"
    for m in METHODS:
        r,_ = run(m, .1, 0, a, pool, test, kl, tmp, steps=20)
        print(f"{m:10s} {r['steps']:3d} steps  {r['s_per_step']:.3f} CPU s/step (median)  {r['cpu_s']:.1f} CPU s in all  "
              f"load {r['load_start']:.1f}-{r['load_end']:.1f}", flush=True)

def table(runs):
    "Mean ± sd over seeds of test QWK and AUC(KL>=2), per method and labelled fraction"
    g = runs.groupby(['fraction', 'method'], sort=False)
    t = g.agg(n=('seed', 'size'), qwk=('qwk', 'mean'), qwk_sd=('qwk', 'std'), auc2=('auc2', 'mean'), auc2_sd=('auc2', 'std'),
              acc=('acc', 'mean'), cpu_s=('cpu_s', 'mean'))
    return t.round(3)

def paired(runs):
    "Each method minus supervised on the same labelled knees (seed): mean ± sd of the difference over seeds, seeds where it is better"
    import pandas as pd
    sup = runs[runs.method == 'supervised'].set_index(['fraction', 'seed'])
    rows = []
    for (f,m),g in runs[runs.method != 'supervised'].groupby(['fraction', 'method'], sort=False):
        g = g.set_index(['fraction', 'seed'])
        r = dict(fraction=f, method=m)
        for k in ('qwk', 'auc2'):
            dd = (g[k] - sup[k].reindex(g.index)).dropna()
            r.update({f'd_{k}': f'{dd.mean():+.3f} ± {dd.std():.3f}' if len(dd) > 1 else f'{dd.mean():+.3f}', f'{k}_better': f'{int((dd > 0).sum())}/{len(dd)}'})
        rows.append(r)
    return pd.DataFrame(rows)

def plot(runs, diag, fn=FIG):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig,axs = plt.subplots(1, 3, figsize=(14, 4))
    cols = dict(supervised='tab:gray', fixmatch='tab:blue', mixmatch='tab:orange')
    for j,(k,name) in enumerate((('qwk', 'test QWK'), ('auc2', 'test AUC(KL≥2)'))):
        ax = axs[j]
        for i,(m,g) in enumerate(runs.groupby('method', sort=False)):
            s = g.groupby('fraction')[k].agg(['mean', 'std']).fillna(0)
            x = s.index.to_numpy()*100 + (i - 1)*.6
            ax.errorbar(x, s['mean'], yerr=s['std'], marker='o', capsize=4, color=cols.get(m), label=m)
            ax.scatter(g.fraction*100 + (i - 1)*.6, g[k], s=10, color=cols.get(m), alpha=.4)
        ax.set_xlabel('labelled share of the pool (%)'); ax.set_ylabel(name); ax.grid(alpha=.3)
        ax.set_title(f'{name}: mean ± sd over seeds (dots: runs)')
    axs[0].legend()
    ax = axs[2]
    if diag is not None and len(diag):
        for (m,f),g in diag.groupby(['method', 'fraction']):
            g = g.groupby('step').mean(numeric_only=True).rolling(10, min_periods=1).mean()
            ls = '-' if f < .2 else '--'
            if m == 'fixmatch':
                ax.plot(g.index, g.mask_rate, ls, color='tab:blue', label=f'FixMatch mask rate, {f:.0%}')
                ax.plot(g.index, g.pl_acc, ls, color='tab:green', label=f'FixMatch pseudo-label acc. (masked), {f:.0%}')
            if m == 'mixmatch': ax.plot(g.index, g.guess_acc, ls, color='tab:orange', label=f'MixMatch guess acc., {f:.0%}')
        ax.set_xlabel('step'); ax.set_ylim(0, 1); ax.grid(alpha=.3); ax.legend(fontsize=7)
        ax.set_title('unlabelled pool, mean over seeds')
    fig.tight_layout(); fn.parent.mkdir(parents=True, exist_ok=True); fig.savefig(fn, dpi=110)
    return fn

def report(out):
    import pandas as pd
    runs = pd.read_csv(out/'runs.csv')
    diag = pd.read_csv(out/'diag.csv') if (out/'diag.csv').exists() else None
    print(f'{len(runs)} runs; test knees: QWK and AUC(KL>=2) with 95 % bootstrap intervals\n')
    for _,r in runs.iterrows():
        d = '' if r.method == 'supervised' else (f"  mask {r.get('last_mask_rate', float('nan')):.2f} pl_acc {r.get('last_pl_acc', float('nan')):.2f}"
                                                 f" all {r.get('last_pl_acc_all', float('nan')):.2f} tau {r.get('last_tau', float('nan')):.2f}"
                                                 if r.method == 'fixmatch' else f"  guess_acc {r.get('last_guess_acc', float('nan')):.2f}")
        pr = f"  predicted grades (test) {r.test_pred}" if isinstance(r.get('test_pred'), str) else ''
        print(f"{r.fraction:.0%} {r.method:10s} seed {r.seed}  {fmt(r)}  {r.steps} steps {r.cpu_s:.0f} CPU s load {r.load_start:.1f}-{r.load_end:.1f}{d}{pr}")
    print('\nmean ± sd over seeds\n', table(runs).to_string())
    print('\npaired with supervised (same labelled knees, seed): mean ± sd over seeds of the difference, seeds better\n', paired(runs).to_string())
    cols = [c for c in runs if c.startswith('last_')]
    if cols: print('\ndiagnostics, last tenth of each run (mean over seeds)\n', runs.groupby(['fraction', 'method'], sort=False)[cols].mean().dropna(how='all').round(3).to_string())
    print(f'\nCPU time of the runs: {runs.cpu_s.sum()/60:.1f} min; plot: {plot(runs, diag)}')

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--steps', type=int, default=1000); p.add_argument('--size', type=int, default=96)
    p.add_argument('--bs', type=int, default=32); p.add_argument('--mu', type=int, default=2)
    p.add_argument('--lr', type=float, default=3e-3); p.add_argument('--momentum', type=float, default=.99,
                   help='running means of the adaptive threshold and the distribution alignment')
    p.add_argument('--fractions', type=float, nargs='+', default=[.1, .25]); p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--methods', nargs='+', default=list(METHODS), choices=METHODS)
    p.add_argument('--out', default=str(Path(tempfile.gettempdir())/'kneeai-kl-semisup'))
    p.add_argument('--time', action='store_true', help='only measure the CPU s/step of each method')
    p.add_argument('--table', action='store_true', help='only print the table and draw the plot of the saved runs')
    a = p.parse_args()
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    if a.table: return report(out)
    warnings.filterwarnings('ignore')
    import torch, pandas as pd
    torch.set_num_threads(1)
    df,kl = kl_table()
    pool,test = pool_and_test(df)
    print(f'pool {len(pool)} knees, test {len(test)} knees; {load()}; threads {torch.get_num_threads()}', flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        if a.time: return time_steps(a, pool, test, kl, Path(tmp))
        done = set()
        if (out/'runs.csv').exists():
            r = pd.read_csv(out/'runs.csv'); done = set(zip(r.fraction.round(3), r.method, r.seed))
        for seed in a.seeds:
            for frac in a.fractions:
                for m in a.methods:
                    if (round(frac, 3), m, seed) in done: continue
                    row,diag = run(m, frac, seed, a, pool, test, kl, Path(tmp))
                    if diag: _append(out/'diag.csv', diag, DIAG_COLS)
                    _append(out/'runs.csv', [row], RUN_COLS)
                    print(f"{frac:.0%} {m:10s} seed {seed}  {fmt(row)}  {row['steps']} steps {row['cpu_s']:.0f} CPU s "
                          f"{row['s_per_step']:.3f} s/step  load {row['load_start']:.1f}-{row['load_end']:.1f}", flush=True)
    report(out)

if __name__ == '__main__': main()
