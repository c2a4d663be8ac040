"""`kneeai predict` on nine exam folders against a `Predictor` loaded once, and `load_model` against building the model.

The question (issue 12): does `kneeai predict --model M E1 ... E9` build its model once, so that it costs little more
than predicting the same nine exams with a model already in memory? Both sides do the same real work: read each exam
folder's three `.npy` volumes, prepare them as in training (scale, resize, normalise), run a three-plane AlexNet
`TripleMRNet` (the MRNet paper's model, 256x256 slices), and return the per-task probabilities.

- `loaded`: `Predictor.predict_exams(exams)` on a `Predictor` loaded before the clock starts (what a service or a notebook
  that predicts repeatedly pays).
- `kneeai predict`: `kneeai.cli.main(['predict', '--model', M, *exams, '--csv'])` in this process, so model loading, exam
  reading and printing are counted, but not the Python interpreter's start and the import of torch and fastai, which a
  one-off command also pays; that is measured separately as `kneeai predict (new process)`.
- `load_model` of the saved AlexNet `TripleMRNet` against `TripleMRNet('alexnet')` built with random weights (what loading
  cost before it built on the meta device).

The exams are the nine real MRNet sample exams (`shared/data/mrnet-samples`) when they are on this machine, else nine
synthetic exams at 256 px. The weights are random: the work does not depend on them. Rounds are interleaved; CPU seconds
(this process, or the child's) are the figures to compare, wall seconds are printed with the load average beside them.
Usage: `python bench/predict.py [--rounds 3] [--device cpu]`.
"""
import argparse, contextlib, io, os, resource, shutil, subprocess, sys, tempfile, time, warnings
from pathlib import Path
from types import SimpleNamespace
warnings.filterwarnings('ignore')
import numpy as np, torch
from kneeai.core import PLANES, reference_data
from kneeai.volumes import data_config
from kneeai.models import TripleMRNet
from kneeai.learner import save_model, load_model, Predictor
from kneeai import cli

def exam_folders(dest:Path) -> tuple[list, str]:
    "Nine exam folders holding `<plane>.npy`, and where they came from"
    root = reference_data('mrnet-samples')
    if root is not None:
        ids = [(s, f.stem) for s in ('train', 'valid') for f in sorted((root/s/'sagittal').glob('*.npy'))][:9]
        src,where = [{p: root/s/p/f'{i}.npy' for p in PLANES} for s,i in ids],'the nine real MRNet sample exams'
    else:
        from kneeai.synthetic import synth_mrnet
        data = synth_mrnet(dest/'synth', n_train=9, n_valid=1, size=256, seed=0, progress=False)
        src,where = [{p: data/'train'/p/f'{i:04d}.npy' for p in PLANES} for i in range(9)],'nine synthetic exams at 256 px'
    exams = []
    for j,s in enumerate(src):
        (e := dest/f'exam{j}').mkdir(parents=True)
        for p,f in s.items(): shutil.copy(f, e/f'{p}.npy')
        exams.append(e)
    return exams, where

def saved_alexnet(dest:Path) -> Path:
    "An AlexNet TripleMRNet with random weights, saved as `kneeai train` saves a model"
    learn = SimpleNamespace(model=TripleMRNet('alexnet'), thresholds=None, dls=SimpleNamespace(data_config=data_config()),
                            model_config=dict(kind='TripleMRNet', arch='alexnet', planes=list(PLANES), n_out=3, shared=False, in_chans=3))
    return save_model(learn, dest/'model')

@contextlib.contextmanager
def timed(res:dict, key:str):
    "Add this block's CPU seconds (this process and its children) and wall seconds to `res[key]`"
    ru = lambda: (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    cpu = lambda r: sum(x.ru_utime + x.ru_stime for x in r)
    r0,t0 = ru(),time.perf_counter()
    yield
    res.setdefault(key, []).append((cpu(ru()) - cpu(r0), time.perf_counter() - t0))

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--device', default='cpu')
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    try:
        exams,where = exam_folders(tmp)
        model = saved_alexnet(tmp)
        pred = Predictor.load(model, a.device)
        pred.predict_exams(exams[:1])  # warm-up: first-call costs (allocator, oneDNN kernels) on both sides alike
        argv = ['predict', '--model', str(model), *map(str, exams), '--csv', '--device', a.device]
        kneeai = Path(sys.executable).parent/'kneeai'
        res,outs = {},{}
        for r in range(a.rounds):
            with timed(res, 'loaded Predictor'): outs['loaded'] = pred.predict_exams(exams)
            with timed(res, 'kneeai predict'), contextlib.redirect_stdout(io.StringIO()) as f: rc = cli.main(argv)
            outs['cli'] = f.getvalue()
            assert rc in (0, None), f'kneeai predict exited with {rc}'
            with timed(res, 'kneeai predict (new process)'): subprocess.run([str(kneeai), *argv], check=True, capture_output=True)
            with timed(res, 'load_model (AlexNet TripleMRNet)'): load_model(model, a.device)
            with timed(res, 'TripleMRNet(alexnet) with random weights'): TripleMRNet('alexnet')
        cli_probs = np.loadtxt(io.StringIO(outs['cli']), delimiter=',', skiprows=1, usecols=(1, 2, 3))
        np.testing.assert_allclose(cli_probs, outs['loaded'].to_numpy(dtype=float), atol=2e-6)  # the same answers (CSV has 6 decimals)
        print(f'{where}; AlexNet TripleMRNet; device {a.device}; torch threads {torch.get_num_threads()}; '
              f'{a.rounds} interleaved rounds; load average {os.getloadavg()[0]:.1f} at the end')
        print(f"{'':44s} {'CPU s (median)':>15s} {'wall s (median)':>16s}")
        med = {k: np.median(np.array(v), 0) for k,v in res.items()}
        for k,(c,w) in med.items(): print(f'{k:44s} {c:15.2f} {w:16.2f}')
        ratio = lambda k1, k2, i: med[k1][i]/med[k2][i]
        print(f"\nkneeai predict / loaded Predictor: {ratio('kneeai predict', 'loaded Predictor', 0):.2f}x CPU, "
              f"{ratio('kneeai predict', 'loaded Predictor', 1):.2f}x wall (goal: at most 1.3x)")
        print(f"kneeai predict in a new process / loaded Predictor: {ratio('kneeai predict (new process)', 'loaded Predictor', 0):.2f}x CPU "
              f"(adds the interpreter's start and importing torch and fastai)")
        print(f"load_model: {med['load_model (AlexNet TripleMRNet)'][1]:.3f} s wall (goal: under 0.3 s); building with random weights "
              f"{ratio('TripleMRNet(alexnet) with random weights', 'load_model (AlexNet TripleMRNet)', 1):.1f}x as long")
    finally: shutil.rmtree(tmp, ignore_errors=True)

if __name__ == '__main__': main()
