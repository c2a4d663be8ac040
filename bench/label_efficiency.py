"""Label efficiency of kneeai's ways to learn from few labels (issue 8), on synthetic knee radiographs.

Writes N synthetic radiographs (DICOM), preprocesses them to SIZE-pixel PNG crops, holds out 30 % of them (whole
patients) as the test split, and for 5 %, 10 % and 25 % of the pool's fracture labels trains `radiograph_learner`
(small_cnn) with: supervised only; a body pretrained on the DICOM tags; a body pretrained with SimCLR; MixMatch;
FixMatch; metadata-pretrained body + FixMatch. Same optimizer steps for each, EMA weights, no model selection; the
test AUC with its 95 % bootstrap interval. Prints one line per run, then the table (mean ± sd over seeds [mean
bootstrap interval]) and the wall time; saves all runs to OUT/label_efficiency.csv.

    .venv/bin/python bench/label_efficiency.py [--n 400] [--size 64] [--seeds 0 1 2] [--steps 100] [--out DIR]
    .venv/bin/python bench/label_efficiency.py --quick    # a 1-seed, 1-share smoke run (a few minutes)
    .venv/bin/python bench/label_efficiency.py --table A.csv B.csv   # the table of runs saved earlier (e.g. seeds run apart)
"""
import argparse, os, time, tempfile, warnings
from pathlib import Path

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--n', type=int, default=400); p.add_argument('--size', type=int, default=64)
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--fractions', type=float, nargs='+', default=[.05, .1, .25])
    p.add_argument('--steps', type=int, default=100); p.add_argument('--bs', type=int, default=16)
    p.add_argument('--pretrain-epochs', type=int, default=10); p.add_argument('--mu', type=int, default=7)
    p.add_argument('--out', default=None); p.add_argument('--quick', action='store_true')
    p.add_argument('--table', nargs='+', default=None, help='only print the table of these saved runs (csv files)')
    a = p.parse_args()
    if a.table:
        import pandas as pd
        return report(pd.concat([pd.read_csv(f) for f in a.table], ignore_index=True))
    if a.quick: a.n,a.seeds,a.fractions,a.steps,a.pretrain_epochs = 120,[0],[.25],10,1
    warnings.filterwarnings('ignore')
    import torch
    from kneeai.semisup import efficiency_data, label_efficiency, efficiency_table
    out = Path(a.out or tempfile.mkdtemp(prefix='kneeai-eff-'))
    t0 = time.perf_counter()
    df = efficiency_data(out, n=a.n, size=a.size, seed=0)
    t_data = time.perf_counter() - t0
    print(f'cpus: {os.cpu_count()}, torch threads: {torch.get_num_threads()}, load average: {os.getloadavg()[0]:.1f}')
    print(f'data: {len(df)} images ({int(df.test.sum())} test, {int(df.fracture.sum())} fractured) in {t_data:.0f} s, folder {out}')
    res = label_efficiency(df, out/'png', fractions=a.fractions, seeds=a.seeds, size=a.size, steps=a.steps, bs=a.bs,
                           pretrain_epochs=a.pretrain_epochs, mu=a.mu, csv=out/'runs_partial.csv')
    res.to_csv(out/'label_efficiency.csv', index=False)
    report(res)
    print(f'\nwall time: {time.perf_counter() - t0:.0f} s; runs saved to {out/"label_efficiency.csv"}')

def report(res):
    from kneeai.semisup import efficiency_table
    print(f"\n{len(res)} runs, seeds {sorted(res.seed.unique().tolist())}; test AUC: mean ± sd over seeds [mean 95 % bootstrap interval]")
    print(efficiency_table(res).to_string())
    cols = [c for c in ('mask_rate', 'pl_acc', 'pl_acc_all', 'guess_acc') if c in res]
    if cols: print('\nsemi-supervised diagnostics (last epoch, mean over seeds)\n', res.groupby(['method', 'fraction'], sort=False)[cols].mean().dropna(how='all').round(3).to_string())
    print('\nseconds per run (mean)\n', res.groupby(['method', 'fraction'], sort=False).seconds.mean().unstack().round(0).to_string())

if __name__ == '__main__': main()
