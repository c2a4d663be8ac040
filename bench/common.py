"""What the benchmarks share: the reference MRNet code's training and evaluation work re-expressed, timing helpers, and FLOP counts.

The reference is ahmedbesbes/mrnet (`train.py`, `dataloader.py`, `model.py`), the most used public re-implementation of
Bien et al.'s MRNet. Its work per exam, reproduced here (not copied) so that a benchmark times the same work:
- one model per (plane, task): AlexNet's convolutional body, a global average pool per slice, the maximum over the
  exam's slices, `Linear(256, 2)` (two logits: negative, positive);
- the loader (`MRDataset`, `batch_size=1`, 11 workers in the reference, fewer here when the machine has fewer cores)
  reads one `.npy` exam, turns the uint8 array into float32 (no scaling), and in training augments it with
  torchsample's `RandomRotate(25)` then `RandomTranslate([0.11, 0.11])`, each one a full bilinear resample of every slice
  computed with torch gathers over a coordinate grid repeated per slice, then `RandomFlip()` (horizontal, p=0.5, through
  numpy with a copy), then repeats the slices to 3 channels `(S, 3, H, W)`; without augmentation it stacks 3 copies in numpy;
- each step: `BCEWithLogitsLoss(weight=[1, neg/pos])` on the one-hot label, `Adam(lr=1e-5, weight_decay=0.1)`,
  `loss.item()`, the sigmoid's positive probability `.item()`, and the running AUC over all exams so far
  (`sklearn.metrics.roc_auc_score`, 0.5 while it is undefined). Its TensorBoard scalars are not written here (tensorboardX is
  not installed; two scalars per step cost microseconds). The reference evaluates without `torch.no_grad()`.
"""
import math, os, random, time, warnings
from contextlib import contextmanager
import numpy as np, torch, torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from sklearn.metrics import roc_auc_score
from sklearn.exceptions import UndefinedMetricWarning
warnings.filterwarnings('ignore', category=UndefinedMetricWarning)  # the running AUC while one class has been seen

def sync(dev):
    "Wait for the device to finish queued work"
    if torch.device(dev).type == 'cuda': torch.cuda.synchronize()

def load_avg() -> str:
    "The 1, 5 and 15 minute load averages and the CPU count, as text"
    return 'load average ' + ', '.join(f'{x:.2f}' for x in os.getloadavg()) + f' ({os.cpu_count()} CPUs)'

def matmul_gflops(dev, n:int=2048, reps:int=5, dtype=torch.float32) -> float:
    "Best GFLOP/s of an n x n matrix multiply in `dtype` on `dev`"
    a,b = torch.randn(n, n, device=dev, dtype=dtype),torch.randn(n, n, device=dev, dtype=dtype)
    for _ in range(2): a @ b
    best = float('inf')
    for _ in range(reps):
        sync(dev); t = time.perf_counter(); a @ b; sync(dev); best = min(best, time.perf_counter() - t)
    return 2*n**3/best/1e9

# ---- the reference code's model, loader and loops, re-expressed ----
class ReferenceMRNet(nn.Module):
    "The reference's single-plane MRNet: a CNN body per slice, average pool, maximum over slices, two logits"
    def __init__(self, body:nn.Module, nf:int=256):
        super().__init__()
        self.body,self.pool,self.fc = body,nn.AdaptiveAvgPool2d(1),nn.Linear(nf, 2)
    def forward(self, x):  # x: (1, S, 3, H, W), one exam
        f = self.pool(self.body(x.squeeze(0))).flatten(1)
        return self.fc(f.amax(0, keepdim=True))

def _grid_resample(x:torch.Tensor, m:torch.Tensor) -> torch.Tensor:
    "torchsample's centred affine resample of every slice of `x` (S, H, W) by the 3x3 matrix `m` (bilinear, by gathers)"
    S,H,W = x.shape
    rc = torch.from_numpy(np.indices((H, W)).reshape(2, -1).T.copy()).float()   # (H*W, 2) row, column
    rc = rc[None].repeat(S, 1, 1)                                              # one grid per slice, as torchsample builds it
    c = torch.tensor([H/2 - .5, W/2 - .5])
    src = (rc - c).bmm(m[:2, :2].T[None].repeat(S, 1, 1)) + m[:2, 2] + c
    r,q = src[..., 0].clamp(0, H - 2),src[..., 1].clamp(0, W - 2)
    r0,q0 = r.floor(),q.floor()
    flat = x.contiguous().view(S, -1)
    at = lambda dr, dq: flat.gather(1, ((r0 + dr)*W + q0 + dq).long())
    fr,fq = r - r0,q - q0
    out = at(0, 0)*(1 - fr)*(1 - fq) + at(1, 0)*fr*(1 - fq) + at(0, 1)*(1 - fr)*fq + at(1, 1)*fr*fq
    return out.view(S, H, W)

def reference_augment(a:np.ndarray) -> torch.Tensor:
    "The reference's training transform of a uint8 volume (S, H, W): rotate, translate, flip, 3 channels -> (S, 3, H, W)"
    x = torch.Tensor(a)
    t = math.radians(random.uniform(-25, 25))
    x = _grid_resample(x, torch.tensor([[math.cos(t), -math.sin(t), 0.], [math.sin(t), math.cos(t), 0.], [0., 0., 1.]]))
    dh,dw = random.uniform(-.11, .11)*x.shape[1],random.uniform(-.11, .11)*x.shape[2]
    x = _grid_resample(x, torch.tensor([[1., 0., dh], [0., 1., dw], [0., 0., 1.]]))
    a = x.numpy()
    if random.random() < .5: a = a[:, :, ::-1]
    x = torch.from_numpy(a.copy())
    return x.repeat(3, 1, 1, 1).permute(1, 0, 2, 3)

class ReferenceExams(torch.utils.data.Dataset):
    "The reference's `MRDataset` for one plane and task over the exams of `df` (rows of `kneeai.volumes.mrnet_df`)"
    def __init__(self, df, plane:str, task:str, augment:bool=True):
        self.paths,self.labels,self.augment = df[plane].tolist(),[int(v) for v in df[task]],augment
        pos = sum(self.labels)
        self.weights = torch.tensor([1., (len(self.labels) - pos)/max(pos, 1)])
    def __len__(self): return len(self.paths)
    def __getitem__(self, i):
        a = np.load(self.paths[i])
        y = torch.tensor([[0., 1.]] if self.labels[i] == 1 else [[1., 0.]])
        x = reference_augment(a) if self.augment else torch.from_numpy(np.stack((a,)*3, axis=1)).float()
        return x, y, self.weights

def reference_loader(df, plane, task, workers:int, augment=True):
    "The reference's loader: one exam per batch, shuffled, `workers` worker processes started anew each epoch"
    return torch.utils.data.DataLoader(ReferenceExams(df, plane, task, augment), batch_size=1, shuffle=True, num_workers=workers)

def reference_step(model, opt, x, y, w, trues, preds):
    "One training step of the reference loop, with its per-step bookkeeping; returns the loss"
    opt.zero_grad()
    y,w = y[0],w[0]
    pred = model(x.float())
    loss = F.binary_cross_entropy_with_logits(pred, y, weight=w)
    loss.backward(); opt.step()
    loss_value = loss.item()
    trues.append(int(y[0][1])); preds.append(torch.sigmoid(pred)[0][1].item())
    try: roc_auc_score(trues, preds)
    except ValueError: pass  # one class so far: the reference logs 0.5
    return loss_value

def reference_epoch(model, opt, df, plane, task, workers, dev, max_exams=None) -> tuple[float, int, int]:
    "One training epoch of the reference loop: (seconds, exams, slices), loader start-up included"
    model.train()
    trues,preds,n,s = [],[],0,0
    sync(dev); t0 = time.perf_counter()
    for x,y,w in reference_loader(df, plane, task, workers):
        reference_step(model, opt, x.to(dev), y.to(dev), w.to(dev), trues, preds)
        n += 1; s += x.shape[1]
        if max_exams and n >= max_exams: break
    sync(dev)
    return time.perf_counter() - t0, n, s

def reference_optimizer(model): return torch.optim.Adam(model.parameters(), lr=1e-5, weight_decay=0.1)

# ---- FLOPs ----
def flops(fn) -> int:
    "FLOPs counted by torch while `fn()` runs"
    with FlopCounterMode(display=False) as fc: fn()
    return fc.get_total_flops()

def train_flops_per_slice(model, make_input, n_slices:int=2) -> float:
    "Forward+backward FLOPs per slice of `model` on `make_input(n_slices)` (a tuple of arguments)"
    def step():
        out = model(*make_input(n_slices))
        out.float().sum().backward()
    f = flops(step)
    model.zero_grad(set_to_none=True)
    return f/n_slices

@contextmanager
def threads(n:int|None):
    "Use `n` torch threads inside the block (None: leave as is)"
    old = torch.get_num_threads()
    if n: torch.set_num_threads(n)
    try: yield
    finally: torch.set_num_threads(old)
