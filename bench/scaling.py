"""How cost grows with the work: synthetic data, folder preprocessing, `kneeai predict` and a training epoch at 5 sizes each.

Each job runs at 5 sizes (exams, images or files), and its cost is measured in CPU seconds (this process and the child
processes it waited for: `kneeai` commands, preprocessing workers, DICOM decoding children) and wall seconds:
- `synth_mrnet`: synthetic MRNet exams (three planes) at `--mr-size` px, in this process;
- `synth_radiographs`: synthetic knee radiographs written as DICOM files at `--xr-size` px, in this process;
- `kneeai preprocess`: the command, in a new process, on a folder of that many of those DICOM files (`--size 128`);
- `kneeai predict`: the command, in a new process, on that many exam folders, with a small_cnn `TripleMRNet` (random
  weights: the work does not depend on them) at 64 px, on the CPU;
- `training epoch`: one epoch (training and one held-out exam) of a small_cnn `TripleMRNet` at 64 px, batch size 8, in
  this process, on the synthetic exams of the same size.

For each job: the exponent k of cost ~ size^k by least squares on the log-log points (with its standard error), the
fixed cost a and the cost per unit b of cost = a + b * size (least squares), and the local exponents between
neighbouring sizes (where they climb towards 1 the fixed costs are being amortised; above 1, cost grows faster than the
work). Prints a table and the load average before and after; saves a log-log plot (default `nbs/images/scaling.png`).

    .venv/bin/python bench/scaling.py [--quick] [--png nbs/images/scaling.png] [--json FILE]
"""
import argparse, json, os, resource, shutil, subprocess, sys, tempfile, time, warnings
from pathlib import Path
from types import SimpleNamespace
warnings.filterwarnings('ignore')
import numpy as np

def load_avg() -> str: return 'load average ' + ', '.join(f'{x:.2f}' for x in os.getloadavg()) + f' ({os.cpu_count()} CPUs)'

def _cpu() -> float:
    "CPU seconds of this process and of its waited-for children"
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))

def timed(fn) -> tuple[float, float]:
    "(CPU, wall) seconds of `fn()`"
    c,w = _cpu(),time.perf_counter()
    fn()
    return _cpu() - c, time.perf_counter() - w

def kneeai_cmd(*args):
    "Run a `kneeai` command in a new process; fail loudly"
    exe = Path(sys.executable).parent/'kneeai'
    r = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True)
    if r.returncode: raise RuntimeError(f'kneeai {args[0]} failed ({r.returncode}): {r.stderr[-2000:]}')

def fit_power(n, t) -> dict:
    "Exponent of t ~ n^k (log-log least squares, with its standard error), a and b of t = a + b n, local exponents"
    x,y = np.log(np.asarray(n, float)),np.log(np.asarray(t, float))
    A = np.stack([x, np.ones_like(x)], 1)
    (k,c),res,*_ = np.linalg.lstsq(A, y, rcond=None)
    r = y - A @ np.array([k, c])
    se = float(np.sqrt((r @ r)/(len(x) - 2)/((x - x.mean()) @ (x - x.mean())))) if len(x) > 2 else float('nan')
    b,a = np.polyfit(np.asarray(n, float), np.asarray(t, float), 1)
    local = [float(np.log(t[i+1]/t[i])/np.log(n[i+1]/n[i])) for i in range(len(n) - 1)]
    return dict(exponent=float(k), se=se, fixed=float(a), per_unit=float(b), local=local)

def run(sizes:dict, mr_size=128, xr_size=256, reps=1, log=print) -> dict:
    "Measure every job at its sizes; the figures as a dict"
    import torch
    from fastai.basics import Learner, BCEWithLogitsLossFlat
    from kneeai.core import PLANES, set_seed
    from kneeai.synthetic import synth_mrnet
    from kneeai.synthetic_radiographs import synth_radiographs
    from kneeai.volumes import mrnet_dls, data_config, mrnet_df
    from kneeai.models import TripleMRNet
    from kneeai.learner import save_model
    tmp = Path(tempfile.mkdtemp(prefix='kneeai-scaling-'))
    res = dict(load_start=load_avg(), mr_size=mr_size, xr_size=xr_size, reps=reps, torch_threads=torch.get_num_threads(), jobs={})
    log(res['load_start'])
    def measure(name, unit, ns, fn):
        rows = []
        for n in ns:
            best = min((timed(lambda: fn(n, r)) for r in range(reps)), key=lambda ct: ct[0])
            rows.append(dict(n=n, cpu=round(best[0], 3), wall=round(best[1], 3)))
            log(f'{name:18s} {n:5d} {unit:7s} CPU {best[0]:7.2f} s  wall {best[1]:7.2f} s  ({load_avg()})')
        res['jobs'][name] = dict(unit=unit, rows=rows, fit=fit_power([r['n'] for r in rows], [r['cpu'] for r in rows]),
                                 fit_wall=fit_power([r['n'] for r in rows], [r['wall'] for r in rows]))
    mr = lambda n, r: tmp/f'mr{n}_{r}'
    # 1 exam held out for the training epoch's validation: n training exams + 1
    measure('synth_mrnet', 'exams', sizes['exams'], lambda n, r: synth_mrnet(mr(n, r), n_train=n + 1, n_valid=0, size=mr_size, seed=0, progress=False,
                                                                             prevalence=dict(abnormal=.8, acl=.5, meniscus=.5)))
    xr = lambda n, r: tmp/f'xr{n}_{r}'
    measure('synth_radiographs', 'images', sizes['files'], lambda n, r: synth_radiographs(xr(n, r), n=n, size=xr_size, seed=0, progress=False))
    measure('kneeai preprocess', 'files', sizes['files'], lambda n, r: kneeai_cmd('preprocess', xr(n, r), tmp/f'pp{n}_{r}', '--size', 128, '-q'))
    model = save_model(SimpleNamespace(model=TripleMRNet('small_cnn', in_chans=1), thresholds=None,
                                       dls=SimpleNamespace(data_config=data_config(size=64)),
                                       model_config=dict(kind='TripleMRNet', arch='small_cnn', planes=list(PLANES), n_out=3, shared=False, in_chans=1)),
                       tmp/'model')
    big = mr(max(sizes['exams']), 0)
    df = mrnet_df(big, 'train')
    def exams(n):
        out = tmp/f'exams{n}'
        if not out.exists():
            for i,row in df.head(n).iterrows():
                (e := out/row.id).mkdir(parents=True)
                for p in PLANES: shutil.copy(row[p], e/f'{p}.npy')
        return sorted(out.iterdir())
    measure('kneeai predict', 'exams', sizes['exams'], lambda n, r: kneeai_cmd('predict', '--model', model, *exams(n), '--csv', '--device', 'cpu'))
    def epoch(n, r):
        set_seed(0)
        d = mr(n, 0)
        dls = mrnet_dls(d, bs=8, valid_ids=[mrnet_df(d, 'train').id.iloc[-1]], size=64, device='cpu', num_workers=0)
        learn = Learner(dls, TripleMRNet('small_cnn', in_chans=1), loss_func=BCEWithLogitsLossFlat(), path=tmp/'run')  # mrnet_learner's model; plain BCE, as a few exams may hold one class
        with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    epoch(min(sizes['exams']), 0)  # warm-up: first calls of the kernels
    measure('training epoch', 'exams', sizes['exams'], epoch)
    shutil.rmtree(tmp, ignore_errors=True)
    res['load_end'] = load_avg()
    log(res['load_end'])
    return res

def table(res:dict) -> str:
    "The figures as plain text"
    lines = [f"{'job':18s} {'unit':7s} {'sizes':>20s}  {'exponent (CPU)':>15s}  {'fixed s':>8s} {'s/unit':>7s}  local exponents (CPU)   exponent (wall)"]
    for name,j in res['jobs'].items():
        f,fw = j['fit'],j['fit_wall']
        ns = ','.join(str(r['n']) for r in j['rows'])
        lines.append(f"{name:18s} {j['unit']:7s} {ns:>20s}  {f['exponent']:8.2f} ± {f['se']:.2f}  {f['fixed']:8.2f} {f['per_unit']:7.3f}  "
                     f"{' '.join(f'{x:.2f}' for x in f['local']):22s}  {fw['exponent']:.2f} ± {fw['se']:.2f}")
    return '\n'.join(lines)

def plot(res:dict, fn):
    "Log-log plot of CPU seconds against size, one line per job, with the a + b n fit and a slope-1 guide"
    import matplotlib, matplotlib.ticker; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig,ax = plt.subplots(figsize=(7, 4.5))
    for name,j in res['jobs'].items():
        n,t = np.array([r['n'] for r in j['rows']], float),np.array([r['cpu'] for r in j['rows']])
        l, = ax.plot(n, t, 'o', label=f"{name} ({j['unit']}; k={j['fit']['exponent']:.2f})")
        nn = np.geomspace(n.min(), n.max(), 50)
        ax.plot(nn, j['fit']['fixed'] + j['fit']['per_unit']*nn, '-', color=l.get_color(), lw=1)
        ax.plot(nn, t[-1]*nn/n[-1], ':', color=l.get_color(), lw=.8)
    ax.set(xscale='log', yscale='log', xlabel='size (exams, images or files)', ylabel='CPU seconds',
           title='Cost against size: points measured, lines a + b·n, dotted slope 1')
    ax.set_xticks(sorted({r['n'] for j in res['jobs'].values() for r in j['rows']}))
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter()); ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.legend(fontsize=7); ax.grid(True, which='both', alpha=.3)
    fig.tight_layout()
    Path(fn).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(fn, dpi=100); plt.close(fig)

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--quick', action='store_true', help='three small sizes per job (a smoke run)')
    ap.add_argument('--exams', type=int, nargs='+', default=[4, 8, 16, 32, 64], help='exam counts (default: 4 8 16 32 64)')
    ap.add_argument('--files', type=int, nargs='+', default=[4, 16, 64, 256, 1024], help='radiograph and file counts (default: 4 16 64 256 1024)')
    ap.add_argument('--mr-size', type=int, default=128, help='side of the synthetic MRNet slices (default: 128)')
    ap.add_argument('--xr-size', type=int, default=256, help='side of the synthetic radiographs (default: 256)')
    ap.add_argument('--reps', type=int, default=1, help='repeats of each point, the cheapest counting (default: 1)')
    ap.add_argument('--png', default=str(Path(__file__).parent.parent/'nbs'/'images'/'scaling.png'), help='the plot (default: nbs/images/scaling.png)')
    ap.add_argument('--json', default=None, help='also write the figures to this JSON file')
    ap.add_argument('--replot', default=None, help='only print the table and draw the plot of figures saved by --json')
    a = ap.parse_args()
    if a.replot:
        res = json.loads(Path(a.replot).read_text())
        print(table(res)); plot(res, a.png); return
    sizes = dict(exams=a.exams, files=a.files) if not a.quick else dict(exams=[2, 3, 4], files=[2, 4, 8])
    t0 = time.perf_counter()
    res = run(sizes, a.mr_size, a.xr_size, a.reps)
    print(table(res))
    print(f'wall time: {time.perf_counter() - t0:.0f} s')
    if a.png: plot(res, a.png); print(f'plot: {a.png}')
    if a.json: Path(a.json).write_text(json.dumps(res, indent=2))

if __name__ == '__main__': main()
