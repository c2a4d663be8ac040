"""The KL recipe chosen by measurement (issue 19): patient-grouped cross-validation on the pool of the shared KL
radiographs (bench/kl_common.py), one factor changed at a time from the KL tutorial's recipe.

Each configuration trains `radiograph_learner` on two folds and scores the third (3 folds, the fold being the
validation split; the LAST epoch is scored, no epoch is picked on the fold that is scored). The out-of-fold
predictions of the 1,200 pool knees give the configuration's cross-validated QWK and AUC(KL>=2). Each fold model also
predicts the held-out TEST knees, plain and with test-time augmentation (fastai's `tta`: the mean of 4 augmented passes
mixed with the plain one), so that TTA and the fold ensemble are measured without training again; the test knees are
used for nothing else (the choice is made on the cross-validated scores).

    .venv/bin/python bench/kl_recipe.py --configs base mirror ce ...   # runs the folds missing from OUT (one .npz each), then the table
    .venv/bin/python bench/kl_recipe.py --table                        # the table of everything run so far (test: TTA, fold ensemble)
    .venv/bin/python bench/kl_recipe.py --paired [--ref base] [--plot nbs/images/kl_recipe.png]   # each configuration against --ref on the same folds
"""
import argparse, json, os, sys, time, tempfile, warnings
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
import numpy as np, pandas as pd
from kl_common import kl_table, pool_and_test, folds, kl_scores, fmt, load

BASE = dict(arch='small_cnn', size=128, epochs=20, bs=32, lr=3e-3, loss='coral', sampler='batch', flip=True, side=False,
            aug=1., wd=None, dropout=0.)
CONFIGS = {  # one factor at a time from the tutorial's recipe
    'base': {},
    'mirror': dict(side=True, flip=False),     # canonical orientation: right knees mirrored onto left, no random flips
    'noflip': dict(flip=False),                # neither mirrored nor flipped (the orientation as acquired)
    'ce': dict(loss=None),                     # plain cross-entropy, linear head
    'cumlink': dict(loss='cumlink'),           # cumulative-link (proportional odds) NLL on the same ordered head
    'nbr_ls': dict(loss='nbr_ls'),             # cross-entropy with label smoothing onto the neighbouring grades
    'nosampler': dict(sampler=None),
    'weighted': dict(sampler='weighted'),
    'ep40': dict(epochs=40),
    'ep10': dict(epochs=10),
    's160': dict(size=160),
    's224': dict(size=224),
    'aug0': dict(aug=0.),
    'aug2': dict(aug=2.),
    'lr1e-2': dict(lr=1e-2),
    'lr1e-3': dict(lr=1e-3),
    'resnet18': dict(arch='resnet18'),
    'resnet10t': dict(arch='timm:resnet10t'),
    'drop.3': dict(dropout=.3),
}

class NeighbourSmoothing:
    "Cross-entropy against targets with `eps` of the mass moved to the neighbouring grades"
    def __init__(self, n, eps=.2): self.n,self.eps = n,eps
    def __call__(self, logits, y):
        import torch, torch.nn.functional as F
        t = F.one_hot(y, self.n).float()
        nb = (F.one_hot((y - 1).clamp(0), self.n) * (y > 0)[:, None] + F.one_hot((y + 1).clamp(max=self.n - 1), self.n) * (y < self.n - 1)[:, None]).float()
        t = (1 - self.eps)*t + self.eps*nb/nb.sum(1, keepdim=True)
        return -(t*F.log_softmax(logits.float(), -1)).sum(1).mean()
    def activation(self, x):
        import torch.nn.functional as F
        return F.softmax(x.float(), -1)
    def decodes(self, x): return x.argmax(-1)


def run_fold(cfg, pool, tst, kl, fold_of, k, seed=0):
    from kneeai.core import set_seed
    from kneeai.radiographs import radiograph_dls
    from kneeai.radiograph_train import radiograph_learner
    from kneeai.learner import SaveBestModel
    from kneeai.tune import AugmentStrength
    set_seed(seed + k)
    df = pool.assign(is_valid=fold_of == k)
    dls = radiograph_dls(df, kl, fn_col='path', task='kl', valid_col='is_valid', size=cfg['size'], bs=cfg['bs'], flip=cfg['flip'],
                         side_col='side' if cfg['side'] else None, seed=seed, device='cpu')
    loss = NeighbourSmoothing(5) if cfg['loss'] == 'nbr_ls' else cfg['loss']   # kneeai's names: None (cross-entropy), 'coral', 'cumlink'
    learn = radiograph_learner(dls, cfg['arch'], loss=loss, sampler=cfg['sampler'], sampler_kwargs=dict(k=1, seed=seed + k) if cfg['sampler'] == 'batch' else None,
                               dropout=cfg['dropout'], path=tempfile.mkdtemp(), csv_log=False, mixed_precision=False,
                               cbs=[AugmentStrength(cfg['aug'])] if cfg['aug'] != 1 else None)
    learn.remove_cbs([c for c in learn.cbs if isinstance(c, SaveBestModel)])
    c0,t0 = time.process_time(),time.perf_counter()
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(cfg['epochs'], cfg['lr'], **({'wd': cfg['wd']} if cfg['wd'] else {}))
    secs = time.process_time() - c0, time.perf_counter() - t0
    with learn.no_bar(), learn.no_logging():
        p_oof,y_oof = learn.get_preds(dl=learn.dls.valid)
        tdl = learn.dls.test_dl(tst, with_labels=True)   # with canonical orientation, mirrored by its side column as in training
        p_t,y_t = learn.get_preds(dl=tdl)
        p_tta,_ = learn.tta(dl=tdl, n=4)
    return dict(oof=p_oof.numpy(), test=p_t.numpy(), test_tta=p_tta.numpy(), cpu=secs[0], wall=secs[1])

def main():
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument('--configs', nargs='*', default=[]); a.add_argument('--set', default=None, help='a JSON dict: a new configuration named by --name')
    a.add_argument('--name', default=None); a.add_argument('--folds', type=int, default=3); a.add_argument('--only-folds', type=int, nargs='*', default=None)
    a.add_argument('--out', default='/tmp/kl_recipe'); a.add_argument('--table', action='store_true', help='only the table of what has run')
    a.add_argument('--paired', action='store_true', help='only each configuration against --ref on the same out-of-fold knees')
    a.add_argument('--ref', default='base'); a.add_argument('--plot', default=None, help='with --paired: a PNG of the differences')
    a.add_argument('--threads', type=int, default=1); a.add_argument('--seed', type=int, default=0, help='training seed (the folds stay the same)')
    args = a.parse_args()
    warnings.filterwarnings('ignore')
    import torch; torch.set_num_threads(args.threads)
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    df,kl = kl_table(); pool,tst = pool_and_test(df); fold_of = folds(pool, args.folds)
    if args.paired:
        t = paired(out, pool, fold_of, args.ref, args.folds)
        if args.plot: plot(t, args.plot, args.ref)
        return
    if args.table: return table(out, pool, tst, fold_of, args.folds)
    todo = {n: CONFIGS[n] for n in args.configs}
    if args.set: todo[args.name] = json.loads(args.set)
    for name,over in todo.items():
        cfg = {**BASE, **over}
        for k in (args.only_folds if args.only_folds is not None else range(args.folds)):
            fn = out/f'{name}.fold{k}.npz'
            if fn.exists(): continue
            l0 = os.getloadavg()[0]
            r = run_fold(cfg, pool, tst, kl, fold_of, k, seed=args.seed)
            np.savez(fn, **{k2: v for k2,v in r.items() if isinstance(v, np.ndarray)}, cpu=r['cpu'], wall=r['wall'], load=l0, cfg=json.dumps(cfg))
            s = kl_scores(pool.kl_grade[fold_of == k], r['oof'], n_boot=200)
            print(f"{name} fold {k}: cpu {r['cpu']:.0f} s wall {r['wall']:.0f} s {load()} | fold {fmt(s)}", flush=True)
    table(out, pool, tst, fold_of, args.folds)

def table(out, pool, tst, fold_of, nf):
    rows = []
    for name in sorted({p.name.split('.fold')[0] for p in out.glob('*.fold*.npz')}):
        fs = [np.load(out/f'{name}.fold{k}.npz') for k in range(nf) if (out/f'{name}.fold{k}.npz').exists()]
        r = dict(config=name, folds=len(fs), cpu_min=sum(float(f['cpu']) for f in fs)/60, load=np.mean([float(f['load']) for f in fs]))
        ks = [k for k in range(nf) if (out/f'{name}.fold{k}.npz').exists()]
        y = np.concatenate([pool.kl_grade[fold_of == k] for k in ks]); p = np.concatenate([f['oof'] for f in fs])
        cv = kl_scores(y, p, n_boot=1000)
        r.update({f'cv_{k}': v for k,v in cv.items() if k != 'n'})
        r['cv_n'] = len(y)
        for what in ('test', 'test_tta'):
            single = [kl_scores(tst.kl_grade, f[what], n_boot=200) for f in fs]
            r[f'{what}_qwk_mean'] = np.mean([s['qwk'] for s in single]); r[f'{what}_auc2_mean'] = np.mean([s['auc2'] for s in single])
            ens = kl_scores(tst.kl_grade, np.mean([f[what] for f in fs], 0))
            r.update({f'{what}_ens_{k}': v for k,v in ens.items() if k != 'n'})
        rows.append(r)
    t = pd.DataFrame(rows).set_index('config')
    t.to_csv(out/'table.csv')
    with pd.option_context('display.width', 250, 'display.max_columns', 40):
        print(t[['folds', 'cpu_min', 'load', 'cv_qwk', 'cv_qwk_lo', 'cv_qwk_hi', 'cv_auc2', 'cv_acc', 'test_qwk_mean', 'test_tta_qwk_mean',
                 'test_ens_qwk', 'test_tta_ens_qwk', 'test_ens_auc2', 'test_tta_ens_auc2']].round(3).sort_values('cv_qwk', ascending=False).to_string())
    return t

def paired(out, pool, fold_of, ref='base', nf=3, n_boot=1000, seed=0):
    "Each configuration against `ref` on the same out-of-fold knees: QWK and AUC(KL>=2) of both, and the paired bootstrap interval of the difference"
    from sklearn.metrics import cohen_kappa_score, roc_auc_score
    def load_oof(name):
        return {k: np.load(out/f'{name}.fold{k}.npz')['oof'] for k in range(nf) if (out/f'{name}.fold{k}.npz').exists()}
    base,rows = load_oof(ref),[]
    def scores(y, p, idx):
        yy,pp = y[idx],p[idx]
        return cohen_kappa_score(yy, pp.argmax(1), weights='quadratic'), roc_auc_score(yy >= 2, pp[:, 2:].sum(1)), (yy == pp.argmax(1)).mean()
    for name in sorted({p.name.split('.fold')[0] for p in out.glob('*.fold*.npz')} - {ref}):
        oof = load_oof(name); ks = sorted(set(oof) & set(base))
        if not ks: continue
        y = np.concatenate([pool.kl_grade.to_numpy()[fold_of == k] for k in ks])
        pa,pb = np.concatenate([oof[k] for k in ks]),np.concatenate([base[k] for k in ks])
        full = np.arange(len(y)); (qa,aa,ca),(qb,ab,cb) = scores(y, pa, full),scores(y, pb, full)
        d,rng = [],np.random.default_rng(seed)   # the same resamples for every configuration on the same knees, whatever else has run
        for _ in range(n_boot):
            i = rng.integers(0, len(y), len(y)); (x1,x2,x3),(z1,z2,z3) = scores(y, pa, i),scores(y, pb, i); d.append((x1 - z1, x2 - z2, x3 - z3))
        d = np.array(d)
        rows.append(dict(config=name, folds=''.join(map(str, ks)), n=len(y), qwk=qa, qwk_ref=qb, d_qwk=qa - qb, d_qwk_lo=np.quantile(d[:, 0], .025), d_qwk_hi=np.quantile(d[:, 0], .975),
                         auc2=aa, auc2_ref=ab, d_auc2=aa - ab, d_auc2_lo=np.quantile(d[:, 1], .025), d_auc2_hi=np.quantile(d[:, 1], .975),
                         acc=ca, acc_ref=cb, d_acc=ca - cb, d_acc_lo=np.quantile(d[:, 2], .025), d_acc_hi=np.quantile(d[:, 2], .975)))
    t = pd.DataFrame(rows).set_index('config').sort_values('d_qwk', ascending=False)
    t.to_csv(out/('paired.csv' if ref == 'base' else f'paired_{ref}.csv'))
    with pd.option_context('display.width', 250, 'display.max_columns', 40): print(t.round(3).to_string())
    return t

def plot(t, fn, ref='base'):
    "The paired differences against the reference `ref` with their 95 % intervals, one row per configuration"
    import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt
    t = t.sort_values('d_qwk')
    fig,axs = plt.subplots(1, 2, figsize=(10, .45*len(t) + 1.4), sharey=True)
    for ax,m,title in zip(axs, ('qwk', 'auc2'), ('quadratic-weighted kappa', 'AUC of KL >= 2')):
        d,lo,hi = t[f'd_{m}'],t[f'd_{m}_lo'],t[f'd_{m}_hi']
        ax.errorbar(d, range(len(t)), xerr=[d - lo, hi - d], fmt='o', capsize=3)
        ax.axvline(0, color='gray', lw=.8); ax.set_title(f'{title}: change vs {ref}'); ax.grid(alpha=.3)
    axs[0].set_yticks(range(len(t))); axs[0].set_yticklabels([f'{c} (folds {f})' for c,f in zip(t.index, t.folds)])
    fig.tight_layout(); fig.savefig(fn, dpi=110); plt.close(fig)

if __name__ == '__main__': main()
