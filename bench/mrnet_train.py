"""MRNet training speed: kneeai's recipe against the reference code's loop (ahmedbesbes/mrnet), same exams, same plane and task.

Both sides train on the same MRNet-format exams at the reference's 256 px, for the same planes and tasks. The reference
trains one single-plane model per (plane, task) pair (its `train.py -p PLANE -t TASK`); kneeai trains one `TripleMRNet`
for all of them. Default: one plane and one task (sagittal, acl), i.e. exactly one reference run; `--planes all --tasks all`
times the nine reference models against one kneeai model. The reference's work per exam is re-expressed in
`bench/common.py` (loader with two bilinear resamples per exam in `--workers` processes, batch size 1, Adam, per-step AUC).

kneeai: `mrnet_dls` (`--bs` exams per batch, kornia augmentation of the batch on the model's device, no loader processes
on the CPU) and `mrnet_learner`, in float32 and in bfloat16 autocast where the device has it; its `auto` choice is printed.

Timing: training epochs only (data loading and augmentation included, validation excluded), after a short warm-up, in
`--rounds` interleaved rounds (one epoch of every variant per round, and a 2048² float32 matmul), the best epoch of each
counting. Printed: exams/s, slices/s, training GFLOP/s (FLOPs counted by torch on a forward+backward) and that as a
fraction of the matmul's GFLOP/s, and the load average before and after.
Usage: `python bench/mrnet_train.py [--n 16 --size 256 --planes sagittal --tasks acl --bs 8 --workers 2 --rounds 2]`.

`--frozen`: epochs with the body frozen (fine_tune's first phase, a linear probe), the ordinary way (every exam through the
CNN each epoch, augmentation included) against `kneeai.learner.fit_head_cached` (features of the un-augmented exams
computed once, then head epochs on them), at the reference's configuration (AlexNet, 256 px, batch size 1, one plane and
task), float32 on both sides, `--rounds` interleaved rounds; wall and CPU seconds (this process, all threads) of one
ordinary epoch (training and validation) and of the cached fit for 1 and `--head-epochs` epochs (caching included), the
speed-ups for 1 and for that many epochs, and the load average.
"""
import argparse, json, tempfile, time, warnings, sys
from pathlib import Path
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated')
import numpy as np, torch
from fastai.callback.core import Callback, CancelFitException
from fastai.callback.tracker import SaveModelCallback
from kneeai.core import PLANES, MRNET_TASKS, set_seed, get_device
from kneeai.synthetic import synth_mrnet
from kneeai.volumes import mrnet_dls, mrnet_df
from kneeai.models import create_backbone
from kneeai.train import mrnet_learner
from kneeai.learner import cpu_bf16_native
sys.path.insert(0, str(Path(__file__).parent))
from common import (load_avg, matmul_gflops, sync, ReferenceMRNet, reference_epoch, reference_optimizer,
                    train_flops_per_slice)

class TrainCount(Callback):
    "Seconds, exams (or images) and slices of each training phase; stops a fit after `max_batches` training batches if set"
    def __init__(self, max_batches=None, slices=True): self.max_batches,self.slices,self.epochs = max_batches,slices,[]
    def before_train(self): self.n,self.s,self.b = 0,0,0; sync(self.dls.device); self.t0 = time.perf_counter()
    def after_batch(self):
        if not self.training: return
        self.n += len(self.yb[0]); self.s += int(self.xb[-1].sum()) if self.slices else 0; self.b += 1
        if self.max_batches and self.b >= self.max_batches: raise CancelFitException()
    def after_train(self): sync(self.dls.device); self.epochs.append((time.perf_counter() - self.t0, self.n, self.s))

def _names(v, all_):
    return list(all_) if v == 'all' else v.split(',')

def kneeai_learner(dls, arch, mixed_precision, init=None):
    "kneeai's MRNet learner from random weights (as the reference trains its body), without best-epoch saving (one held-out exam)"
    set_seed(0)
    learn = mrnet_learner(dls, arch=arch, pretrained=False, path=tempfile.mkdtemp(), csv_log=False, mixed_precision=mixed_precision)
    learn.remove_cbs([cb for cb in learn.cbs if isinstance(cb, SaveModelCallback)])
    if init is not None: learn.model.load_state_dict(init)
    return learn

def kneeai_epoch(learn, lr=1e-3, max_batches=None, slices=True):
    "One training epoch (validation excluded from the timing): (seconds, exams, slices)"
    cb = TrainCount(max_batches, slices)
    with learn.no_bar(), learn.no_logging(), learn.added_cbs(cb):
        learn.fit(1, lr)
        if max_batches and not cb.epochs: cb.after_train()
    return cb.epochs[-1]

def _data(data, n_train:int, size:int) -> Path:
    "`data`, or a new synthetic MRNet folder of `n_train` training exams (ACL tears in half of them)"
    if data is not None: return Path(data)
    data = Path(tempfile.mkdtemp())/'mrnet'
    return synth_mrnet(data, n_train=n_train, n_valid=1, size=size, seed=0, progress=False, prevalence=dict(abnormal=.8, acl=.5, meniscus=.5))

def run(data=None, n=16, size=256, arch='alexnet', planes='sagittal', tasks='acl', bs=8, workers=2, device=None,
        rounds=2, kneeai_modes=('fp32', 'bf16'), reference=True, log=print, matmul_n=2048) -> dict:
    "Measure; returns the figures as a dict (also used by bench/gpu_check.py)"
    dev = get_device(device)
    planes,tasks = _names(planes, PLANES),_names(tasks, MRNET_TASKS)
    log(f'{load_avg()} at the start')
    data = _data(data, n + 1, size)
    df = mrnet_df(data, 'train', tasks, planes)
    valid_id = df.id.iloc[-1]
    set_seed(0)
    dls = mrnet_dls(data, tasks, planes, bs=bs, valid_ids=[valid_id], device=dev)  # the slices' own size
    train_df = dls.train.items.reset_index(drop=True)
    side = int(np.load(train_df[planes[0]].iloc[0], mmap_mode='r').shape[-1])
    has_bf16 = dev.type == 'cuda' or (dev.type == 'cpu' and cpu_bf16_native())
    modes = [m for m in kneeai_modes if m != 'bf16' or has_bf16]
    learners = {}
    for m in modes:
        learners[m] = kneeai_learner(dls, arch, {'fp32': False, 'bf16': True, 'auto': 'auto'}[m],
                                     None if not learners else next(iter(learners.values())).model.state_dict())
    first_learner = next(iter(learners.values()))
    first = first_learner.model
    refs = {}
    if reference:
        for p in planes:
            for t in tasks:
                body,nf = create_backbone(arch)
                try: body.load_state_dict(first.encoder_for(p).body.state_dict())  # same initial body as kneeai's
                except RuntimeError: pass  # kneeai's body folds the gray channels (in_chans=1): the reference's keeps 3
                mdl = ReferenceMRNet(body, nf).to(dev)
                refs[(p, t)] = (mdl, reference_optimizer(mdl))
    # FLOPs of a training step per slice (same body on both sides; the heads are negligible)
    k_model = first
    fl_k = train_flops_per_slice(k_model, lambda s: (*[torch.zeros(1, s, side, side, device=dev)]*len(planes),
                                                     torch.full((1, len(planes)), s, device=dev)))
    fl_r = train_flops_per_slice(next(iter(refs.values()))[0], lambda s: (torch.zeros(1, s, 3, side, side, device=dev),)) if refs else fl_k
    # Warm-up: allocations, kernel choice and (for 'auto') kneeai's own measurement
    for m,l in learners.items(): kneeai_epoch(l, max_batches=1)
    for (p,t),(mdl,opt) in refs.items(): reference_epoch(mdl, opt, train_df, p, t, workers, dev, max_exams=2)
    times = {**{f'kneeai {m}': [] for m in learners}, **({'reference': []} if refs else {})}
    mm = []
    for _ in range(rounds):
        mm.append(matmul_gflops(dev, matmul_n))
        for m,l in learners.items(): times[f'kneeai {m}'].append(kneeai_epoch(l))
        if refs:
            parts = [reference_epoch(mdl, opt, train_df, p, t, workers, dev) for (p,t),(mdl,opt) in refs.items()]
            # all pairs' models together cover each exam once: seconds add up, exams and slices are one model's
            times['reference'].append((sum(x[0] for x in parts), parts[0][1], parts[0][2]))
    mm_best = max(mm)
    mm_bf16 = matmul_gflops(dev, matmul_n, dtype=torch.bfloat16) if has_bf16 else None
    res = dict(device=str(dev), arch=arch, size=side, planes=planes, tasks=tasks, n_train=len(train_df), bs=dls.train.bs,
               workers=workers, matmul_n=matmul_n, matmul_fp32_gflops=round(mm_best, 1), matmul_bf16_gflops=mm_bf16 and round(mm_bf16, 1),
               rounds=rounds, variants={})
    for k,v in times.items():
        secs,ex,sl = min(v)
        n_models = len(refs) if k == 'reference' else 1
        fl = (fl_r*n_models if k == 'reference' else fl_k)
        gf = fl*sl/secs/1e9
        res['variants'][k] = dict(exams_per_s=round(ex/secs, 3), slices_per_s=round(sl/secs, 1), gflops=round(gf, 1),
                                  matmul_fraction=round(gf/mm_best, 3), epoch_seconds=[round(x[0], 2) for x in v],
                                  exams=ex, slices=sl)
    if learners: res['auto_choice'] = kneeai_auto_choice(first_learner)
    res['load_avg_end'] = load_avg()
    log(f'{load_avg()} at the end')
    return res

def _timed(fn) -> tuple[float, float]:
    "(wall, CPU) seconds of `fn()`"
    w,c = time.perf_counter(),time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c

def run_frozen(data=None, n=16, size=256, arch='alexnet', planes='sagittal', tasks='acl', bs=1, device=None, rounds=2,
               head_epochs=10, log=print) -> dict:
    "Frozen-body epochs, the ordinary way against cached features; returns the figures as a dict"
    from kneeai.learner import fit_head_cached
    dev = get_device(device)
    planes,tasks = _names(planes, PLANES),_names(tasks, MRNET_TASKS)
    log(f'{load_avg()} at the start')
    data = _data(data, n + 2, size)
    df = mrnet_df(data, 'train', tasks, planes)
    set_seed(0)
    dls = mrnet_dls(data, tasks, planes, bs=bs, valid_ids=list(df.id.iloc[-2:]), device=dev)
    learn = kneeai_learner(dls, arch, False)
    learn.freeze()
    def ordinary():
        with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    times = dict(ordinary=[], cached_1=[], cached_k=[])
    ordinary(); fit_head_cached(learn, 1, 1e-3, progress=False)  # warm-up
    for _ in range(rounds):
        times['ordinary'].append(_timed(ordinary))
        times['cached_1'].append(_timed(lambda: fit_head_cached(learn, 1, 1e-3, progress=False)))
        times['cached_k'].append(_timed(lambda: fit_head_cached(learn, head_epochs, 1e-3, progress=False)))
    best = {k: (min(w for w,_ in v), min(c for _,c in v)) for k,v in times.items()}
    res = dict(device=str(dev), arch=arch, size=size, planes=planes, tasks=tasks, bs=bs, n_train=len(dls.train_ds), n_valid=len(dls.valid_ds),
               head_epochs=head_epochs, rounds=rounds, threads=torch.get_num_threads(),
               seconds={k: dict(wall=[round(w, 2) for w,_ in v], cpu=[round(c, 2) for _,c in v]) for k,v in times.items()},
               speedup_1=dict(wall=round(best['ordinary'][0]/best['cached_1'][0], 2), cpu=round(best['ordinary'][1]/best['cached_1'][1], 2)),
               speedup_k=dict(wall=round(head_epochs*best['ordinary'][0]/best['cached_k'][0], 2),
                              cpu=round(head_epochs*best['ordinary'][1]/best['cached_k'][1], 2)),
               load_avg_end=load_avg())
    log(f'{load_avg()} at the end')
    return res

def report_frozen(res:dict) -> str:
    "The frozen-body figures as plain text"
    s,k = res['seconds'],res['head_epochs']
    return '\n'.join([
        f"frozen body: {res['arch']}, {res['size']} px, planes {','.join(res['planes'])}, tasks {','.join(res['tasks'])}, bs {res['bs']}, "
        f"{res['n_train']} training + {res['n_valid']} held-out exams, device {res['device']}, {res['threads']} torch threads, float32",
        f"one ordinary frozen epoch (training + validation): wall {s['ordinary']['wall']} s, CPU {s['ordinary']['cpu']} s per round",
        f"cached, 1 head epoch (caching included):        wall {s['cached_1']['wall']} s, CPU {s['cached_1']['cpu']} s",
        f"cached, {k} head epochs (caching included):       wall {s['cached_k']['wall']} s, CPU {s['cached_k']['cpu']} s",
        f"speed-up, 1 epoch (fine_tune's frozen phase): {res['speedup_1']['wall']}x wall, {res['speedup_1']['cpu']}x CPU",
        f"speed-up, {k} epochs (a linear probe): {res['speedup_k']['wall']}x wall, {res['speedup_k']['cpu']}x CPU",
        "(the ordinary epochs augment each exam; the cached features are of the un-augmented exams)"])

def kneeai_auto_choice(learn) -> str:
    "What mixed_precision='auto' chooses for this learner's model and data on this machine (measured once, then cached)"
    try: from kneeai.learner import amp_decision
    except ImportError: return 'float32 (this kneeai version does not measure)'
    b = learn.dls.train.one_batch()
    return amp_decision(learn.model, b[:learn.dls.n_inp], b[learn.dls.n_inp:], learn.loss_func, learn.dls.device,
                        arch=getattr(learn, 'model_config', None))['choice']

def report(res:dict) -> str:
    "The figures as a plain-text table"
    v = res['variants']
    lines = [f"{res['arch']}, {res['size']} px, planes {','.join(res['planes'])}, tasks {','.join(res['tasks'])}, "
             f"{res['n_train']} training exams, device {res['device']}, kneeai bs={res['bs']}, reference workers={res['workers']}",
             f"matmul {res['matmul_n']}x{res['matmul_n']} float32: {res['matmul_fp32_gflops']} GFLOP/s"
             + (f"; bfloat16: {res['matmul_bf16_gflops']} GFLOP/s" if res['matmul_bf16_gflops'] else ''),
             f"{'variant':14s} {'exams/s':>8s} {'slices/s':>9s} {'GFLOP/s':>8s} {'of matmul':>9s}  epoch seconds per round"]
    for k,d in v.items():
        lines.append(f"{k:14s} {d['exams_per_s']:8.3f} {d['slices_per_s']:9.1f} {d['gflops']:8.1f} {d['matmul_fraction']:9.2f}  {d['epoch_seconds']}")
    if 'reference' in v:
        r = v['reference']['exams_per_s']
        lines.append('ratio kneeai / reference (exams/s): ' + ', '.join(f"{k.split()[1]} {d['exams_per_s']/r:.2f}x" for k,d in v.items() if k != 'reference'))
    if 'auto_choice' in res: lines.append(f"kneeai mixed_precision='auto' on this machine: {res['auto_choice']}")
    return '\n'.join(lines)

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=16, help='training exams (default: 16)')
    ap.add_argument('--size', type=int, default=256, help='slice side of the synthetic exams (default: 256, as MRNet)')
    ap.add_argument('--arch', default='alexnet', help="backbone (default: alexnet, the reference's)")
    ap.add_argument('--planes', default='sagittal', help="comma-separated planes or 'all' (default: sagittal)")
    ap.add_argument('--tasks', default='acl', help="comma-separated tasks or 'all' (default: acl)")
    ap.add_argument('--bs', type=int, default=None, help="kneeai's exams per batch (default: 8, train_mrnet's; with --frozen 1, the reference's)")
    ap.add_argument('--workers', type=int, default=min(11, torch.multiprocessing.cpu_count()),
                    help="reference loader's worker processes (the reference: 11; default: that or the CPU count)")
    ap.add_argument('--device', default=None)
    ap.add_argument('--rounds', type=int, default=2, help='timed epochs of each, interleaved; the best counts (default: 2)')
    ap.add_argument('--data', default=None, help='an existing MRNet folder (train/, valid/, csv files); default: synthetic')
    ap.add_argument('--kneeai', default='fp32,bf16', help="kneeai variants: fp32, bf16, auto (default: fp32,bf16)")
    ap.add_argument('--no-reference', action='store_true', help='time kneeai only')
    ap.add_argument('--json', default=None, help='also write the figures to this JSON file')
    ap.add_argument('--frozen', action='store_true', help='time frozen-body epochs, the ordinary way against cached features')
    ap.add_argument('--head-epochs', type=int, default=10, help='with --frozen: head epochs of the longer cached fit (default: 10)')
    a = ap.parse_args()
    if a.frozen:
        res = run_frozen(a.data, a.n, a.size, a.arch, a.planes, a.tasks, a.bs or 1, a.device, a.rounds, a.head_epochs)
        print(report_frozen(res))
        if a.json: Path(a.json).write_text(json.dumps(res, indent=2))
        return
    a.bs = a.bs or 8
    res = run(a.data, a.n, a.size, a.arch, a.planes, a.tasks, a.bs, a.workers, a.device, a.rounds,
              tuple(a.kneeai.split(',')), not a.no_reference)
    print(report(res))
    if a.json: Path(a.json).write_text(json.dumps(res, indent=2))

if __name__ == '__main__': main()
