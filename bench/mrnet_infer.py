"""Per-exam MRNet inference on the real sample exams, and the FLOP rate it reaches against this machine's matmul.

Runs a three-plane `TripleMRNet` with AlexNet backbones (no weights are needed: the work does not depend on them)
on the real MRNet sample exams (`shared/data/mrnet-samples`, uint8 volumes of 256x256 slices), one exam at a
time, and prints the per-exam latency, the GFLOP/s achieved (FLOPs counted by `torch.utils.flop_counter`), the
GFLOP/s of a large float32 matrix multiply measured in the same run, and their ratio. Several ways of running the
same model are compared: the memory layout of the reference code (contiguous NCHW), kneeai's default
(channels-last input during CPU inference), channels-last weights too, and the folded gray first convolution
(`in_chans=1`) with channels-last weights. Usage: `python bench/mrnet_infer.py [--exams N] [--reps R] [--threads T] [--device D]`.
"""
import argparse, time, warnings
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated')
import numpy as np, torch
from torch.utils.flop_counter import FlopCounterMode
from kneeai.core import PLANES, reference_data, device_info
from kneeai.models import TripleMRNet

def load_exams(n:int):
    "Up to `n` real exams as dicts plane -> uint8 array (S, 256, 256)"
    root = reference_data('mrnet-samples')
    if root is None: raise SystemExit('the MRNet sample exams (shared/data/mrnet-samples) are not on this machine')
    ids = [(split, f.stem) for split in ('train', 'valid') for f in sorted((root/split/'sagittal').glob('*.npy'))]
    return [{p: np.load(root/split/p/f'{i}.npy', allow_pickle=False) for p in PLANES} for split,i in ids[:n]]

def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize()

def matmul_gflops(dev, n:int=2048, reps:int=10) -> float:
    "Best float32 GFLOP/s of an n x n matrix multiply"
    a,b = torch.randn(n, n, device=dev),torch.randn(n, n, device=dev)
    for _ in range(2): a @ b
    best = float('inf')
    for _ in range(reps):
        sync(dev); t = time.perf_counter(); a @ b; sync(dev); best = min(best, time.perf_counter() - t)
    return 2*n**3/best/1e9

def to_input(exam, dev):
    "An exam's volumes as normalised float batches of one, and lengths (the model's input)"
    vols = [torch.from_numpy(exam[p]).to(dev).float().div_(255).sub_(.5).div_(.25)[None] for p in PLANES]
    return (*vols, torch.tensor([[exam[p].shape[0] for p in PLANES]], device=dev))

def flops_of(model, exams, dev) -> int:
    "FLOPs of one pass over the exams (this pass also warms the model up)"
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        for e in exams: model(*to_input(e, dev))
    return fc.get_total_flops()

def seconds(model, exams, dev) -> float:
    "Seconds for one pass over the exams, one exam at a time"
    with torch.inference_mode():
        sync(dev); t = time.perf_counter()
        for e in exams: model(*to_input(e, dev))
        sync(dev)
    return time.perf_counter() - t

VARIANTS = {'contiguous (reference layout)': (3, False, False),     # in_chans, channels-last input, channels-last weights
            'kneeai default (channels_last input)': (3, True, False),
            'in_chans=1 + channels_last weights': (1, True, True)}

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--exams', type=int, default=3, help='how many of the sample exams (up to 9)')
    ap.add_argument('--reps', type=int, default=3, help='timed passes over the exams per variant (the best is kept)')
    ap.add_argument('--threads', type=int, default=0, help='torch threads (0: torch default)')
    ap.add_argument('--device', default='cpu')
    args = ap.parse_args()
    if args.threads: torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    exams = load_exams(args.exams)
    slices = [sum(e[p].shape[0] for p in PLANES) for e in exams]
    print(f"{device_info()} threads={torch.get_num_threads()}")
    print(f"{len(exams)} real exams, slices per exam (3 planes) {slices}, 256x256\n")
    models,flops,best = {},{},{}
    for name,(in_chans,cl_in,cl_w) in VARIANTS.items():
        torch.manual_seed(0)
        m = TripleMRNet('alexnet', in_chans=in_chans).to(dev).eval()
        for p in m.planes: m.encoder_for(p).cpu_channels_last = cl_in
        models[name] = m.to(memory_format=torch.channels_last) if cl_w else m
        flops[name],best[name] = flops_of(models[name], exams, dev),float('inf')
    mm = 0.
    for _ in range(args.reps):   # round-robin, best of each: fairer when the machine is shared
        mm = max(mm, matmul_gflops(dev))
        for name,m in models.items(): best[name] = min(best[name], seconds(m, exams, dev))
    rows = [(n, best[n]/len(exams)*1e3, flops[n]/len(exams)/1e9, flops[n]/best[n]/1e9) for n in VARIANTS]
    print(f"matrix multiply (float32, 2048x2048): {mm:.1f} GFLOP/s\n")
    print(f"{'variant':38s} {'ms/exam':>9s} {'GFLOP/exam':>11s} {'GFLOP/s':>9s} {'ratio to matmul':>16s}")
    for name,ms,gf,rate in rows: print(f"{name:38s} {ms:9.1f} {gf:11.1f} {rate:9.1f} {rate/mm:16.2f}")
    ref,base = rows[0],rows[1]
    print(f"\nkneeai MRNet inference (AlexNet, 3 planes, default): {base[1]:.0f} ms per exam, {base[3]:.1f} GFLOP/s; "
          f"matmul {mm:.1f} GFLOP/s; ratio {base[3]/mm:.2f}"
          f" (reference layout: {ref[1]:.0f} ms, ratio {ref[3]/mm:.2f}; speed-up {ref[1]/base[1]:.2f}x)")

if __name__ == '__main__': main()
