"""Per-exam MRNet inference on the real sample exams, kneeai against the reference code's evaluation, and the FLOP rate against this machine's matmul.

On the real MRNet sample exams (`shared/data/mrnet-samples`, uint8 volumes of 256x256 slices), one exam at a time, for the
same planes and tasks on both sides (default: the reference's configuration, one plane and one task, sagittal/acl):
- the reference code's evaluation (ahmedbesbes/mrnet, re-expressed in `bench/common.py`): one single-plane AlexNet MRNet
  per (plane, task), the exam stacked to 3 channels in numpy, raw 0..255 values, autograd left on (its `evaluate_model`
  does not use `torch.no_grad()`), the positive probability read with `.item()`;
- kneeai's `TripleMRNet` for those planes with one logit per task, under `torch.inference_mode()`: in the reference's memory
  layout (contiguous NCHW), kneeai's default (channels-last input on the CPU), and the folded gray first convolution
  (`in_chans=1`) with channels-last weights.
No weights are needed: the work does not depend on them. Printed: latency per exam, GFLOP/s (FLOPs counted by
`torch.utils.flop_counter`), a 2048x2048 float32 matmul's GFLOP/s measured in the same run, their ratio, and the load average.
Usage: `python bench/mrnet_infer.py [--exams N] [--reps R] [--threads T] [--device D] [--planes all --tasks all]`.
"""
import argparse, sys, time, warnings
from pathlib import Path
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated')
import numpy as np, torch
from torch.utils.flop_counter import FlopCounterMode
from kneeai.core import PLANES, MRNET_TASKS, reference_data, device_info
from kneeai.models import TripleMRNet, create_backbone
sys.path.insert(0, str(Path(__file__).parent))
from common import ReferenceMRNet, load_avg, matmul_gflops, sync

def load_exams(n:int):
    "Up to `n` real exams as dicts plane -> uint8 array (S, 256, 256)"
    root = reference_data('mrnet-samples')
    if root is None: raise SystemExit('the MRNet sample exams (shared/data/mrnet-samples) are not on this machine')
    ids = [(split, f.stem) for split in ('train', 'valid') for f in sorted((root/split/'sagittal').glob('*.npy'))]
    return [{p: np.load(root/split/p/f'{i}.npy', allow_pickle=False) for p in PLANES} for split,i in ids[:n]]

PLANES_USED = list(PLANES)

def to_input(exam, dev):
    "An exam's volumes as normalised float batches of one, and lengths (the model's input)"
    vols = [torch.from_numpy(exam[p]).to(dev).float().div_(255).sub_(.5).div_(.25)[None] for p in PLANES_USED]
    return (*vols, torch.tensor([[exam[p].shape[0] for p in PLANES_USED]], device=dev))

class ReferenceEval:
    "The reference's evaluation of one exam: one single-plane model per (plane, task), autograd on, probabilities by `.item()`"
    def __init__(self, pairs, dev):
        self.models = {}
        for pt in pairs:
            body,nf = create_backbone('alexnet')
            self.models[pt] = ReferenceMRNet(body, nf).to(dev).eval()
        self.dev = dev
    def __call__(self, exam):
        out = []
        for (p,t),m in self.models.items():
            x = torch.from_numpy(np.stack((exam[p],)*3, axis=1)).float()[None].to(self.dev)
            out.append(torch.sigmoid(m(x))[0][1].item())
        return out

def _one(model, e, dev):
    if isinstance(model, ReferenceEval): return model(e)
    with torch.inference_mode(): return model(*to_input(e, dev))

def flops_of(model, exams, dev) -> int:
    "FLOPs of one pass over the exams (this pass also warms the model up)"
    with FlopCounterMode(display=False) as fc:
        for e in exams: _one(model, e, dev)
    return fc.get_total_flops()

def seconds(model, exams, dev) -> float:
    "Seconds for one pass over the exams, one exam at a time"
    sync(dev); t = time.perf_counter()
    for e in exams: _one(model, e, dev)
    sync(dev)
    return time.perf_counter() - t

VARIANTS = {'reference code': None,
            'kneeai, contiguous (reference layout)': (3, False, False),     # in_chans, channels-last input, channels-last weights
            'kneeai default (channels_last input)': (3, True, False),
            'in_chans=1 + channels_last weights': (1, True, True)}

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--exams', type=int, default=3, help='how many of the sample exams (up to 9)')
    ap.add_argument('--reps', type=int, default=3, help='timed passes over the exams per variant (the best is kept)')
    ap.add_argument('--threads', type=int, default=0, help='torch threads (0: torch default)')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--planes', default='sagittal', help="comma-separated planes or 'all' (default: sagittal, the reference's one plane)")
    ap.add_argument('--tasks', default='acl', help="comma-separated tasks or 'all' (default: acl)")
    args = ap.parse_args()
    PLANES_USED[:] = list(PLANES) if args.planes == 'all' else args.planes.split(',')
    tasks = list(MRNET_TASKS) if args.tasks == 'all' else args.tasks.split(',')
    if args.threads: torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    exams = load_exams(args.exams)
    slices = [sum(e[p].shape[0] for p in PLANES_USED) for e in exams]
    print(f"{device_info()} threads={torch.get_num_threads()}\n{load_avg()} at the start")
    print(f"{len(exams)} real exams, planes {PLANES_USED}, tasks {tasks}, slices per exam {slices}, 256x256\n")
    models,flops,best = {},{},{}
    for name,v in VARIANTS.items():
        torch.manual_seed(0)
        if v is None: models[name] = ReferenceEval([(p, t) for p in PLANES_USED for t in tasks], dev)
        else:
            in_chans,cl_in,cl_w = v
            m = TripleMRNet('alexnet', planes=PLANES_USED, n_out=len(tasks), in_chans=in_chans).to(dev).eval()
            for p in m.planes: m.encoder_for(p).cpu_channels_last = cl_in
            models[name] = m.to(memory_format=torch.channels_last) if cl_w else m
        flops[name],best[name] = flops_of(models[name], exams, dev),float('inf')
    mm = 0.
    for _ in range(args.reps):   # round-robin, best of each: fairer when the machine is shared
        mm = max(mm, matmul_gflops(dev))
        for name,m in models.items(): best[name] = min(best[name], seconds(m, exams, dev))
    rows = [(n, best[n]/len(exams)*1e3, flops[n]/len(exams)/1e9, flops[n]/best[n]/1e9) for n in VARIANTS]
    print(f"matrix multiply (float32, 2048x2048): {mm:.1f} GFLOP/s\n")
    print(f"{'variant':42s} {'ms/exam':>9s} {'GFLOP/exam':>11s} {'GFLOP/s':>9s} {'ratio to matmul':>16s}")
    for name,ms,gf,rate in rows: print(f"{name:42s} {ms:9.1f} {gf:11.1f} {rate:9.1f} {rate/mm:16.2f}")
    ref,base = rows[0],rows[2]
    print(f"\nkneeai MRNet inference (AlexNet, default): {base[1]:.0f} ms per exam, {base[3]:.1f} GFLOP/s; "
          f"matmul {mm:.1f} GFLOP/s; ratio {base[3]/mm:.2f}"
          f" (reference code: {ref[1]:.0f} ms, ratio {ref[3]/mm:.2f}; speed-up {ref[1]/base[1]:.2f}x)\n{load_avg()} at the end")

if __name__ == '__main__': main()
