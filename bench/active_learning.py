"""Active learning on the shared KL radiographs (issue 17): learning curves of selection strategies, by `kneeai.active.annotation_loop`.

Holds out 20 % of the patients of ../shared/data/knee-kl as the test split, labels 5 % of the other patients, then for each
strategy adds 5 % of the pool's knees per round for ROUNDS rounds, retraining a small_cnn (SIZE px, EPOCHS epochs, CORAL,
class-balanced batches) each time; QWK and AUC(KL>=2) on the test knees with 95 % bootstrap intervals. Appends each
result row to OUT/active_learning.csv as it comes (a killed run keeps what it did), then prints the curves (mean over
seeds), the labels each strategy needs to reach random's final QWK, and saves the plot.

    nice -n 10 .venv/bin/python bench/active_learning.py [--seeds 0 1 2] [--strategies random entropy bald coreset hybrid] [--out DIR]
    .venv/bin/python bench/active_learning.py --quick          # 1 seed, random and entropy, 1 round (a minute or two)
    .venv/bin/python bench/active_learning.py --table A.csv    # the summary and plot of runs saved earlier
"""
import argparse, os, tempfile, time, warnings
from pathlib import Path

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--strategies', nargs='+', default=['random', 'entropy', 'bald', 'coreset', 'hybrid'])
    p.add_argument('--rounds', type=int, default=5); p.add_argument('--epochs', type=int, default=8)
    p.add_argument('--size', type=int, default=64); p.add_argument('--threads', type=int, default=1)
    p.add_argument('--out', default=None, help='folder for the CSV and plot (default: a new temporary folder)'); p.add_argument('--quick', action='store_true')
    p.add_argument('--plot', default=None, help='where to save the plot (default: OUT/active_learning_kl.png)')
    p.add_argument('--table', nargs='+', default=None, help='only summarise these saved runs (csv files)')
    a = p.parse_args()
    import pandas as pd, torch
    out = Path(a.out or tempfile.mkdtemp(prefix='kneeai-al-')); out.mkdir(parents=True, exist_ok=True)
    if a.table: return report(pd.concat([pd.read_csv(f) for f in a.table], ignore_index=True), a.plot or out/'active_learning_kl.png')
    if a.quick: a.seeds,a.strategies,a.rounds = [0],['random', 'entropy'],1
    warnings.filterwarnings('ignore')
    torch.set_num_threads(a.threads)
    from kneeai.core import reference_data
    from kneeai.active import annotation_loop
    kl = reference_data('knee-kl')
    if kl is None: raise SystemExit('the knee-kl reference radiographs are not on this machine (../shared/data/knee-kl)')
    print(f'cpus: {os.cpu_count()}, torch threads: {torch.get_num_threads()}, load average: {os.getloadavg()}', flush=True)
    csv = out/'active_learning.csv'
    if csv.exists(): csv.unlink()
    t0,c0 = time.perf_counter(),time.process_time()
    res = annotation_loop(pd.read_csv(kl/'labels.csv'), kl, task='kl', strategies=a.strategies, seeds=a.seeds, rounds=a.rounds,
                          epochs=a.epochs, data_kwargs=dict(size=a.size), csv=csv, log=lambda s: print(s, flush=True))
    print(f'\npool {res.attrs["n_pool"]} knees, test {res.attrs["n_test"]} knees, {res.attrs["n_add"]} added per round')
    print(f'wall {time.perf_counter() - t0:.0f} s, CPU {time.process_time() - c0:.0f} s, load average {os.getloadavg()}')
    report(res, a.plot or out/'active_learning_kl.png')

def report(res, plot):
    from kneeai.active import curve_summary, labels_to_reach, plot_curves
    import pandas as pd
    pd.set_option('display.width', 200)
    print(f"\n{len(res)} results, seeds {sorted(res.seed.unique().tolist())}: mean over seeds [mean 95 % bootstrap interval]")
    print(curve_summary(res).round(3).to_string())
    for m in ('kappa', 'auc'): print(f'\nlabels to reach random\'s final mean {m}:\n', labels_to_reach(res, m).round(3).to_string())
    plot_curves(res, title='KL grades: active learning (small_cnn, 64 px)').savefig(plot, dpi=110)
    print(f'\nplot: {plot}')

if __name__ == '__main__': main()
