"""Data-parallel overhead on this machine: `kneeai train mrnet` on the same synthetic work in 1 process and in 2 (gloo, `--launch 2`).

Same global batch (1 x bs 4, 2 x bs 2), same epochs, same seed. Prints the wall time, the CPU time of all processes (user +
system) and the seconds of the epochs (history.csv), with the load average before and after each run. On a machine with
few cores this shows the cost of data parallelism (a process each, gradients averaged every step), not a speed-up: that
comes with one GPU per process.

    python bench/distributed.py [--epochs 3] [--n-train 24] [--size 64]
"""
import argparse, os, resource, subprocess, sys, tempfile, time
from pathlib import Path
import pandas as pd

def load() -> str: return ' '.join(f'{x:.2f}' for x in os.getloadavg())

def run(cmd:list, threads:int) -> dict:
    "Wall and CPU seconds (user + system, all child processes) of `cmd`"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    l0,t0 = load(),time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, 'OMP_NUM_THREADS': str(threads)})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode: sys.exit(f'{cmd} failed:\n{r.stderr[-3000:]}')
    return dict(wall=round(wall, 1), cpu=round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 1), load_before=l0, load_after=load())

def epoch_seconds(out:Path) -> float:
    "Seconds of the epochs, from fastai's time column (mm:ss) in history.csv"
    t = pd.read_csv(out/'history.csv')['time'].astype(str).str.split(':', expand=True).astype(int)
    return float((t[0]*60 + t[1]).sum())

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--epochs', type=int, default=3); p.add_argument('--n-train', type=int, default=24); p.add_argument('--size', type=int, default=64)
    a = p.parse_args()
    exe = str(Path(sys.executable).parent/'kneeai')
    tmp = Path(tempfile.mkdtemp())
    subprocess.run([exe, 'synth', 'mrnet', str(tmp/'data'), '--n-train', str(a.n_train), '--n-valid', '8', '--size', str(a.size), '--seed', '1', '-q'], check=True)
    common = ['train', 'mrnet', '--data', str(tmp/'data'), '--epochs', str(a.epochs), '--size', str(a.size), '--device', 'cpu', '--no-pretrained',
              '--n-boot', '200', '--mixed-precision', 'off', '--seed', '0', '--workers', '0', '-q']
    rows = {}
    for name,extra,threads in [('1 process, 1 thread, bs 4', ['--bs', '4'], 1), ('1 process, 2 threads, bs 4', ['--bs', '4'], 2),
                               ('2 processes (gloo), 1 thread each, bs 2 each', ['--bs', '2', '--launch', '2'], 1)]:
        out = tmp/name.split(',')[0].replace(' ', '_')
        rows[name] = dict(run([exe, *common, '--out', str(out), *extra], threads), epochs_s=epoch_seconds(out))
    df = pd.DataFrame(rows).T
    print(f'{os.cpu_count()} cores; {a.n_train} training exams at {a.size} px, {a.epochs} epochs, global batch 4')
    print(df.to_string())
    one = rows['1 process, 1 thread, bs 4']
    two = rows['2 processes (gloo), 1 thread each, bs 2 each']
    print(f"2 processes / 1 process: wall x{two['wall']/one['wall']:.2f}, CPU x{two['cpu']/one['cpu']:.2f}, epochs x{two['epochs_s']/max(one['epochs_s'], 1):.2f}")

if __name__ == '__main__': main()
