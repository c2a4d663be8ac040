"""Self-supervised pretraining on the shared KL radiographs (issue 19): SimCLR and BYOL against random initialisation.

Both methods pretrain `small_cnn` at 128 px on the 1,200 POOL knees of `kl_common` with their labels hidden (the test
knees are never read for pretraining); the SSL loss of each epoch goes to OUT/ssl_log.csv. A linear probe (logistic
regression on the frozen body's pooled features of the pool, scored on the test knees) checks that the representation
learnt something. Each init is then fine-tuned with the supervised base recipe (`radiograph_dls(size=128, bs=32,
flip=True)`, `radiograph_learner(loss='coral', sampler='batch')`, lr 3e-3) at 100 %, 25 % and 10 % of the pool's labels
(`labelled_mask`: whole patients, the rest unused), 20/sqrt(frac) epochs (20, 40, 63: 600, 300 and 190 optimiser steps;
the same for every init), and scored once on the test knees with `kl_scores`. Recipes:
  fine_tune: `fit_recipe(pretrained=True)` (a head epoch on cached features of the frozen body, then everything at
             slice(lr/200, lr/2)), what `kneeai train radiographs --pretrained BODY` does;
  one_cycle: `fit_one_cycle(epochs, lr)` from the init, the supervised base's schedule (the random baseline).
Every finished run is appended to OUT/runs.csv at once; runs already there are skipped (a cut-off loses nothing); the
runs go in order of priority (`plan`). SSL: SimCLR 40 epochs, BYOL 25 (about 13 CPU minutes each, 1 thread).

    .venv/bin/python bench/kl_ssl.py --out /work/ssl_runs           # everything, resumable
    .venv/bin/python bench/kl_ssl.py --out /work/ssl_runs --table   # only the table and plot of saved runs
"""
import argparse, os, sys, tempfile, time, warnings
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
import numpy as np, pandas as pd, torch
from kl_common import kl_table, pool_and_test, labelled_mask, kl_scores, fmt

FRACS = (1., .25, .1)
EPOCHS = 20  # at 100 % of the labels (the supervised base); 20/sqrt(frac) at frac
def n_epochs(frac:float) -> int: return int(round(EPOCHS/np.sqrt(frac)))

def _append(csv:Path, row:dict):
    "Add `row` to `csv` (columns are the union of all rows'), replacing the file in one rename"
    df = pd.concat([pd.read_csv(csv), pd.DataFrame([row])], ignore_index=True) if csv.exists() else pd.DataFrame([row])
    df.to_csv(csv.with_suffix('.tmp'), index=False); os.replace(csv.with_suffix('.tmp'), csv)

def _cost(c0) -> dict: return dict(cpu_s=round(time.process_time() - c0, 1), load=round(os.getloadavg()[0], 2))

def pretrain(method, pool, kl, out, epochs, lr, bs=64, size=128, seed=0):
    "Pretrain small_cnn with `method` on the pool images (no labels); the body file (skipped if it exists)"
    from fastai.callback.core import Callback
    from kneeai.core import set_seed
    from kneeai.pretrain import image_dls, ssl_learner, save_body
    fn = out/f'{method}_body.safetensors'
    if fn.exists(): return fn
    log = out/'ssl_log.csv'
    if log.exists(): (d := pd.read_csv(log))[d.method != method].to_csv(log, index=False)  # an unfinished run starts again
    c0 = time.process_time()
    class Log(Callback):
        order = 60  # after the Recorder
        def after_epoch(self):
            tl,vl = self.recorder.values[-1][:2]
            _append(log, dict(method=method, epoch=self.epoch + 1, train_loss=round(tl, 4), valid_loss=round(vl, 4), **_cost(c0)))
            print(f'{method} epoch {self.epoch + 1}/{epochs}: train {tl:.4f} valid {vl:.4f}, {_cost(c0)}', flush=True)
    set_seed(seed)
    dls = image_dls([kl/p for p in pool.path], size=size, bs=bs, valid_pct=.05, seed=seed, device='cpu')
    learn = ssl_learner(dls, 'small_cnn', method=method, cbs=Log())
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, lr)
    return save_body(learn, fn, data='knee-kl pool (1,200 knees, labels hidden)', epochs=epochs, lr=lr, bs=bs, size=size, cpu_s=round(time.process_time() - c0))

def random_body(out, seed=0):
    "A random-init small_cnn body file, for the random init fine-tuned through `fit_recipe(pretrained=True)`"
    from kneeai.core import set_seed
    from kneeai.models import create_backbone
    from kneeai.pretrain import save_body
    fn = out/'random_body.safetensors'
    if not fn.exists():
        set_seed(seed)
        save_body(create_backbone('small_cnn', False, 1)[0], fn, arch='small_cnn', in_chans=1, pretraining='none')
    return fn

def _images(df, kl, size=128) -> torch.Tensor:
    from kneeai.radiographs import load_radiograph, GRAY_STATS
    x = torch.stack([load_radiograph(kl/p, size).as_subclass(torch.Tensor) for p in df.path])
    return (x - GRAY_STATS[0][0])/GRAY_STATS[1][0]

@torch.no_grad()
def _features(fn, x, bs=100) -> np.ndarray:
    from kneeai.pretrain import load_body
    body,_ = load_body(fn)
    body.eval()
    return torch.cat([body(x[i:i+bs]).mean((-2, -1)) for i in range(0, len(x), bs)]).numpy()

def probe(inits, pool, test, kl, csv):
    "Linear probe: logistic regression on the frozen body's pooled features of the labelled pool, scored on the test knees"
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from sklearn.pipeline import make_pipeline
    done = set(pd.read_csv(csv).key) if csv.exists() else set()
    xp,xt = None,None
    for init,fn in inits.items():
        for frac in FRACS:
            key = f'probe/{init}/{frac}/0'
            if key in done: continue
            if xp is None: xp,xt = _images(pool, kl),_images(test, kl)
            c0 = time.process_time()
            fp,ft = _features(fn, xp),_features(fn, xt)
            m = labelled_mask(pool, frac, 0)
            clf = make_pipeline(StandardScaler(), LogisticRegression(C=.1, max_iter=2000)).fit(fp[m], pool.kl_grade[m])
            s = kl_scores(test.kl_grade, clf.predict_proba(ft))
            _append(csv, dict(key=key, init=init, recipe='probe', frac=frac, seed=0, epochs=0, **s, **_cost(c0)))
            print(f'{key}: {fmt(s)}', flush=True)

def finetune(init, fn, recipe, frac, seed, pool, test, kl, csv, lr=3e-3):
    "One fine-tuning run, appended to `csv` (skipped if there)"
    from kneeai.core import set_seed
    from kneeai.radiographs import radiograph_dls
    from kneeai.radiograph_train import radiograph_learner
    from kneeai.learner import fit_recipe
    key = f'{recipe}/{init}/{frac}/{seed}'
    if csv.exists() and key in set(pd.read_csv(csv).key): return
    c0 = time.process_time()
    lab,ep = pool[labelled_mask(pool, frac, seed)].reset_index(drop=True),n_epochs(frac)
    set_seed(seed)
    dls = radiograph_dls(lab, kl, fn_col='path', task='kl', size=128, bs=32, flip=True, seed=seed, device='cpu')
    with tempfile.TemporaryDirectory() as tmp:
        learn = radiograph_learner(dls, 'small_cnn', loss='coral', sampler='batch', sampler_kwargs=dict(k=1, seed=seed),
                                   pretrained=fn or False, path=tmp, csv_log=False)
        if recipe == 'one_cycle': learn.unfreeze()  # a body file makes a frozen learner; the base schedule trains everything
        steps = len(learn.dls.train)*ep
        fit_recipe(learn, ep, lr, pretrained=recipe == 'fine_tune', progress=False)
        with learn.no_bar(): probs,y = learn.get_preds(dl=learn.dls.test_dl(test, with_labels=True))
    s = kl_scores(y.numpy(), probs.numpy())
    _append(csv, dict(key=key, init=init, recipe=recipe, frac=frac, seed=seed, epochs=ep, steps=steps, n_labelled=len(lab), **s, **_cost(c0)))
    print(f'{key} ({ep} epochs, {steps} steps): {fmt(s)}, {_cost(c0)}', flush=True)

def plan(seeds=(0, 1)):
    "The fine-tuning runs in order of priority (a cut-off drops the last)"
    base = [('one_cycle', 'random'), ('fine_tune', 'simclr'), ('fine_tune', 'byol')]
    same = [('one_cycle', 'random'), ('one_cycle', 'simclr'), ('one_cycle', 'byol')]  # the base's schedule for every init
    s0,more = seeds[0],seeds[1:]
    return [*[(i, r, f, s0) for f in (.1, .25, 1.) for r,i in base],          # every init, first seed
            *[('random', 'fine_tune', f, s0) for f in (.1, .25)],             # the random body through fit_recipe
            *[(i, 'one_cycle', f, s0) for f in (.1, .25) for i in ('simclr', 'byol')],
            *[(i, r, f, s) for s in more for f in (.1, .25) for r,i in same],  # more seeds where labels are few
            *[(i, 'one_cycle', 1., s0) for i in ('byol', 'simclr')],
            *[(i, 'fine_tune', f, s) for s in more for f in (.1, .25) for i in ('simclr', 'byol')], ('random', 'fine_tune', 1., s0)]

def report(out, plot):
    runs = pd.read_csv(out/'runs.csv')
    pd.set_option('display.width', 200)
    cols = ['qwk', 'qwk_lo', 'qwk_hi', 'auc2', 'auc2_lo', 'auc2_hi', 'acc', 'epochs', 'cpu_s', 'load']
    print('\nEach run (test knees, 95 % bootstrap intervals):')
    print(runs.sort_values(['recipe', 'init', 'frac', 'seed'])[['recipe', 'init', 'frac', 'seed', *cols]].round(3).to_string(index=False))
    g = runs.groupby(['recipe', 'init', 'frac'])
    summ = g[['qwk', 'auc2']].agg(['mean', 'std', 'count']).round(3)
    print('\nMean ± sd over seeds:'); print(summ.to_string())
    if (out/'ssl_log.csv').exists():
        lg = pd.read_csv(out/'ssl_log.csv')
        print('\nSSL loss (first, last epoch) and CPU:'); print(lg.groupby('method').agg(epochs=('epoch', 'max'), first=('train_loss', 'first'),
              last=('train_loss', 'last'), valid_last=('valid_loss', 'last'), cpu_s=('cpu_s', 'max'), load=('load', 'mean')).round(3).to_string())
    print(f"\nCPU s: fine-tuning/probes {runs.cpu_s.sum():.0f}")
    import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt
    fig,axs = plt.subplots(1, 2, figsize=(11, 4))
    styles = {('one_cycle', 'random'): ('k', 'o', 'random init, fit_one_cycle (base)'), ('fine_tune', 'random'): ('gray', 'x', 'random init, fit_recipe fine-tune'),
              ('fine_tune', 'simclr'): ('C0', 's', 'SimCLR, fit_recipe fine-tune'), ('fine_tune', 'byol'): ('C1', 'D', 'BYOL, fit_recipe fine-tune'),
              ('one_cycle', 'simclr'): ('C0', '^', 'SimCLR, fit_one_cycle'), ('one_cycle', 'byol'): ('C1', 'v', 'BYOL, fit_one_cycle'),
              ('probe', 'random'): ('gray', '.', 'random, linear probe'), ('probe', 'simclr'): ('C0', '.', 'SimCLR, linear probe'), ('probe', 'byol'): ('C1', '.', 'BYOL, linear probe')}
    for ax,(m,name) in zip(axs, [('qwk', 'QWK (5 grades)'), ('auc2', 'AUC (KL >= 2)')]):
        for j,((recipe,init),(c,mk,lab)) in enumerate(styles.items()):
            d = runs[(runs.recipe == recipe) & (runs.init == init)]
            if d.empty: continue
            a = d.groupby('frac').agg(est=(m, 'mean'), lo=(f'{m}_lo', 'mean'), hi=(f'{m}_hi', 'mean')).sort_index()
            x = a.index.to_numpy()*(1 + .03*(j - 4))
            ls = ':' if recipe == 'probe' else ('--' if recipe == 'one_cycle' and init != 'random' else '-')
            ax.errorbar(x, a.est, yerr=[a.est - a.lo, a.hi - a.est], color=c, marker=mk, ls=ls, capsize=3, label=lab, alpha=.6 if recipe == 'probe' else 1)
        ax.set_xscale('log'); ax.set_xticks(FRACS, ['100 %', '25 %', '10 %']); ax.set_xlabel('labels of the pool used'); ax.set_title(name); ax.grid(alpha=.3)
    axs[1].legend(fontsize=7, loc='lower right')
    fig.suptitle('KL grading, small_cnn 128 px, 300 test knees (mean over seeds; bars: 95 % bootstrap intervals, averaged)', fontsize=9)
    fig.tight_layout(); fig.savefig(plot, dpi=100); print(f'plot: {plot}')

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', default=None, help='folder for the bodies and CSVs (default: a new temporary folder)')
    p.add_argument('--ssl-epochs', type=int, nargs=2, help='about 13 CPU minutes each (SimCLR 20 s an epoch, BYOL 31 s)', default=[40, 25], metavar=('SIMCLR', 'BYOL'))
    p.add_argument('--ssl-lr', type=float, default=3e-3)
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1])
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--plot', default=str(Path(__file__).parents[1]/'nbs/images/kl_ssl.png'))
    p.add_argument('--table', action='store_true', help='only print the table and draw the plot of saved runs')
    p.add_argument('--quick', action='store_true', help='a smoke test: 1 SSL epoch, 1/20 of the fine-tuning epochs')
    a = p.parse_args()
    global EPOCHS
    if a.quick: a.ssl_epochs,EPOCHS = [1, 1],1
    out = Path(a.out or tempfile.mkdtemp()); out.mkdir(parents=True, exist_ok=True)
    if a.table: return report(out, a.plot)
    torch.set_num_threads(a.threads); warnings.filterwarnings('ignore')
    df,kl = kl_table()
    pool,test = pool_and_test(df)
    print(f'pool {len(pool)} knees, test {len(test)} knees; out {out}; load {os.getloadavg()[0]:.2f}', flush=True)
    inits = dict(random=random_body(out))
    for m,ep in zip(('simclr', 'byol'), a.ssl_epochs): inits[m] = pretrain(m, pool, kl, out, ep, a.ssl_lr)
    csv = out/'runs.csv'
    probe(inits, pool, test, kl, csv)
    for init,recipe,frac,seed in plan(tuple(a.seeds)):
        fn = None if init == 'random' and recipe == 'one_cycle' else inits[init]
        finetune(init, fn, recipe, frac, seed, pool, test, kl, csv)
    report(out, a.plot)

if __name__ == '__main__': main()
