"""Training speed: kneeai's batched MRNet training against a batch-size-1 loop in the style of the reference code.

Both train the same three-plane `TripleMRNet` (same architecture, same initial weights) for one epoch on the same
synthetic MRNet-format exams, and the script prints training exams per second for each and their ratio.

- kneeai: `mrnet_dls` (several exams per batch, padded to the longest, slices packed through the backbone) with
  kornia augmentation of the whole batch on the model's device, trained by a fastai `Learner` (`mrnet_learner`):
  once with its defaults (channels-last slices on the CPU; mixed precision on CUDA only) and once with
  `mixed_precision=True` (also bfloat16 autocast on a CPU with native bfloat16, which pays for AlexNet-size bodies).
- reference style (Bien et al.'s MRNet code and its re-implementations): a torch `DataLoader` with `batch_size=1`
  whose workers load one exam and augment it there (random rotation, shift and flip per exam, as those
  implementations do with torchvision), then one optimiser step per exam, in float32 and the default memory layout.

Only the training epochs are timed (data loading and augmentation included; validation excluded), after a warm-up
epoch, in interleaved rounds (one epoch of each per round); the best epoch of each counts.
Usage: `python bench/mrnet_train.py [--n 32 --size 128 --arch alexnet --bs 8 --workers 2 --device cpu]`.
"""
import argparse, time, tempfile, warnings
from pathlib import Path
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated')
import numpy as np, torch, torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from fastai.callback.core import Callback
from fastai.callback.tracker import SaveModelCallback
from kneeai.core import PLANES, MRNET_TASKS, set_seed, device_info, get_device
from kneeai.synthetic import synth_mrnet
from kneeai.volumes import mrnet_dls, mrnet_df, MRNET_MEAN, MRNET_STD
from kneeai.train import mrnet_learner
from kneeai.learner import cpu_bf16_native

class TrainTimer(Callback):
    "Seconds spent in the training phase of each epoch"
    def before_fit(self): self.times = []
    def before_train(self): self.t0 = time.perf_counter()
    def after_train(self):
        if self.learn.dls.device.type == 'cuda': torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self.t0)

class OneExam(torch.utils.data.Dataset):
    "The reference style: one exam per item, read and augmented in the DataLoader worker"
    def __init__(self, df, size): self.df,self.size = df.reset_index(drop=True),size
    def __len__(self): return len(self.df)
    def __getitem__(self, i):
        r,vols = self.df.iloc[i],[]
        angle,dx,dy,flip = np.random.uniform(-25, 25),*np.random.randint(-25, 26, 2)*self.size//256,np.random.rand() < .5
        for p in PLANES:
            v = torch.from_numpy(np.load(r[p])).float()
            if v.shape[-1] != self.size: v = F.interpolate(v[None], size=(self.size, self.size), mode='bilinear', antialias=True)[0]
            v = TF.affine(v, angle=angle, translate=[int(dx), int(dy)], scale=1., shear=[0., 0.])
            if flip: v = v.flip(-1)
            vols.append((v - MRNET_MEAN) / MRNET_STD)
        return (*vols, torch.tensor(r[list(MRNET_TASKS)].to_numpy(dtype=np.float32)))

def reference_epoch(model, df, size, workers, device, pos_weight):
    "One epoch of batch-size-1 training; returns its seconds"
    dl = torch.utils.data.DataLoader(OneExam(df, size), batch_size=1, shuffle=True, num_workers=workers, persistent_workers=False)
    opt = torch.optim.AdamW(model.parameters(), 1e-4, weight_decay=0.01)
    model.train()
    t0 = time.perf_counter()
    for *vols,y in dl:
        vols,y = [v.to(device) for v in vols],y.to(device)
        lengths = torch.tensor([[v.shape[1] for v in vols]], device=device)
        loss = F.binary_cross_entropy_with_logits(model(*vols, lengths=lengths), y, pos_weight=pos_weight)
        opt.zero_grad(); loss.backward(); opt.step()
    if device.type == 'cuda': torch.cuda.synchronize()
    return time.perf_counter() - t0

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=32, help='training exams (default: 32)')
    ap.add_argument('--size', type=int, default=128, help='slice side (default: 128)')
    ap.add_argument('--arch', default='alexnet')
    ap.add_argument('--bs', type=int, default=8, help="kneeai's exams per batch (default: 8)")
    ap.add_argument('--workers', type=int, default=2, help="reference loader's worker processes (default: 2)")
    ap.add_argument('--device', default=None)
    ap.add_argument('--rounds', type=int, default=2, help='timed epochs of each, interleaved; the best counts (default: 2)')
    ap.add_argument('--data', default=None, help='an existing MRNet folder (default: write a synthetic one)')
    a = ap.parse_args()
    dev = get_device(a.device)
    print(device_info())
    data = Path(a.data or tempfile.mkdtemp())/'mrnet'
    if not a.data: synth_mrnet(data, n_train=a.n, n_valid=2, size=a.size, seed=0, progress=False)
    set_seed(0)
    dls = mrnet_dls(data, bs=a.bs, valid_ids=[mrnet_df(data).id.iloc[0]], size=a.size, device=dev, num_workers=0 if dev.type == 'cpu' else a.workers)
    n = len(dls.train_ds)
    n_kneeai = n - n % a.bs if dls.train.drop_last else n   # fastai drops the last partial training batch
    def kneeai_learner(mixed_precision, init=None):
        set_seed(0)
        learn = mrnet_learner(dls, arch=a.arch, path=tempfile.mkdtemp(), csv_log=False, cbs=TrainTimer(), mixed_precision=mixed_precision)
        learn.remove_cbs([cb for cb in learn.cbs if isinstance(cb, SaveModelCallback)])  # one held-out exam: nothing to select
        if init is not None: learn.model.load_state_dict(init)
        return learn
    fp32_learn = kneeai_learner('auto')  # the default
    init = {k: v.clone() for k,v in fp32_learn.model.state_dict().items()}
    amp_learn = kneeai_learner(True if dev.type == 'cuda' or cpu_bf16_native() else False, init)
    amp = any(type(cb).__name__ in ('MixedPrecision', 'CPUMixedPrecision') for cb in amp_learn.cbs)
    ref_model = kneeai_learner(False, init).model
    for p in ref_model.planes: ref_model.encoder_for(p).cpu_channels_last = False  # the reference's layout
    df = dls.train.items
    pw = torch.tensor(((len(df) - df[list(MRNET_TASKS)].sum()) / df[list(MRNET_TASKS)].sum()).to_numpy(dtype=np.float32), device=dev)
    def kneeai_epoch(learn):
        with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-4)
        return learn.train_timer.times[-1]
    # Warm-up (allocations, kernel choice), then `rounds` rounds of one epoch of each, taking each one's best epoch:
    # round-robin keeps a change in the machine's load from favouring whichever ran at a quieter moment.
    kneeai_epoch(amp_learn); kneeai_epoch(fp32_learn); reference_epoch(ref_model, df.iloc[:4], a.size, a.workers, dev, pw)
    times = {'amp': [], 'fp32': [], 'ref': []}
    for _ in range(a.rounds):
        times['amp'].append(kneeai_epoch(amp_learn))
        times['fp32'].append(kneeai_epoch(fp32_learn))
        times['ref'].append(reference_epoch(ref_model, df, a.size, a.workers, dev, pw))
    print('epoch seconds per round:', {k: [round(t, 1) for t in v] for k,v in times.items()})
    t_kneeai,t_fp32,t_ref = (min(times[k]) for k in ('amp', 'fp32', 'ref'))
    k,k32,r = n_kneeai/t_kneeai, n_kneeai/t_fp32, len(df)/t_ref
    print(f'{a.arch}, {a.size} px, {len(df)} training exams, device {dev}')
    print(f'kneeai batched (bs={a.bs}, kornia augmentation on the batch), defaults: {k32:.2f} exams/s')
    print(f'kneeai batched, mixed_precision=True ({"on" if amp else "not available"}): {k:.2f} exams/s')
    print(f'reference style (bs=1, per-exam augmentation in {a.workers} loader workers): {r:.2f} exams/s')
    print(f'ratio kneeai / reference: {k32/r:.2f}x with the defaults, {k/r:.2f}x with mixed_precision=True')

if __name__ == '__main__': main()
