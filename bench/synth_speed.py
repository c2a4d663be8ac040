"""Speed of kneeai's synthetic MRNet generator: 100 exams at 64 px (target: under 10 s on a 2-core machine) and
exams at MRNet's 256 px, against the baseline of writing the same number of random uint8 stacks of the same shapes
(the cost of the files alone). Run: .venv/bin/python bench/synth_speed.py [N_EXAMS] [SIZE]"""
import sys, time, tempfile, shutil
from pathlib import Path
import numpy as np
from kneeai.core import PLANES
from kneeai.synthetic import synth_mrnet

def bench_synth_mrnet(n:int=100, size:int=64, seed:int=0):
    "Seconds to write `n` synthetic MRNet exams at `size`, and to write random stacks of the same shapes"
    d = Path(tempfile.mkdtemp())
    try:
        t0 = time.perf_counter()
        synth_mrnet(d/'synth', n_train=n - n//5, n_valid=n//5, size=size, seed=seed, progress=False)
        t_synth = time.perf_counter() - t0
        shapes = [np.load(fn, mmap_mode='r').shape for fn in sorted((d/'synth').glob('*/*/*.npy'))]
        rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        for i,s in enumerate(shapes): np.save(d/f'rand{i}.npy', rng.integers(0, 256, s, dtype=np.uint8))
        t_files = time.perf_counter() - t0
    finally: shutil.rmtree(d)
    return t_synth, t_files

if __name__ == '__main__':
    n,size = (int(sys.argv[1]) if len(sys.argv) > 1 else 100),(int(sys.argv[2]) if len(sys.argv) > 2 else 64)
    for n_,s in ((n, size), (10, 256)):
        ts,tf = bench_synth_mrnet(n_, s)
        print(f'synth_mrnet: {n_} exams at {s} px: {ts:.2f} s ({ts/n_*1000:.0f} ms/exam); '
              f'writing random stacks of the same shapes: {tf:.2f} s; ratio {ts/tf:.1f}x')
