"""Issue 18's 500s, reproduced without a server: `.npy` headers parsed on several threads while the garbage collector runs
finalisers (as it does at random in a busy server). numpy's reader parses a header with `ast.literal_eval`, and CPython
3.11's ast module keeps its recursion depth in one counter for the whole interpreter (gh-106905, not fixed in 3.11): a
thread switch inside the AST's construction fails it with `SystemError: AST constructor recursion depth mismatch`.
kneeai's `kneeai.core.npy_header` matches the header with a regular expression and builds no AST.

Usage: `python bench/npy_threads.py [--seconds 10] [--threads 4]`; prints calls and SystemErrors of each reader."""
import argparse, faulthandler, gc, io, sys, threading, time
import numpy as np
from kneeai.core import npy_header

def numpy_header(data:bytes):
    f = io.BytesIO(data); np.lib.format.read_magic(f); return np.lib.format.read_array_header_1_0(f)

class Cyclic:
    "Garbage in a reference cycle, with a finaliser: Python code run by the collector, where the interpreter may switch threads"
    def __init__(self): self.me = self
    def __del__(self): sum(range(50))

def run(read, data:bytes, seconds:float, n:int) -> tuple:
    errs,calls,stop = [],[0],time.time() + seconds
    def work():
        while time.time() < stop:
            for _ in range(20): Cyclic()
            try: read(data); calls[0] += 1
            except SystemError as e: errs.append(str(e))
    ts = [threading.Thread(target=work) for _ in range(n)]
    for t in ts: t.start()
    for t in ts: t.join()
    return calls[0], errs

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--seconds', type=float, default=10)
    ap.add_argument('--threads', type=int, default=4)
    a = ap.parse_args()
    faulthandler.dump_traceback_later(4*a.seconds + 60, exit=True)  # a bound on the whole run
    b = io.BytesIO(); np.save(b, np.zeros((30, 256, 256), np.uint8))
    gc.set_threshold(50, 1, 1); sys.setswitchinterval(1e-5)
    print(f'Python {sys.version.split()[0]}, numpy {np.__version__}; {a.threads} threads, {a.seconds:g} s each')
    for name,read in (('numpy (ast.literal_eval)', numpy_header), ('kneeai.core.npy_header', npy_header)):
        calls,errs = run(read, b.getvalue(), a.seconds, a.threads)
        print(f'{name:<26} {calls:>8} headers read, {len(errs)} SystemError' + (f' (e.g. {errs[0]})' if errs else ''), flush=True)

if __name__ == '__main__': main()
