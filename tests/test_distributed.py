"""Data-parallel training in 2 CPU processes (gloo), as `accelerate launch` / `kneeai train --launch 2` runs it (#15).

The ranks are forked from the test process (a new Python process would spend seconds importing torch and fastai) with the
environment `torchrun` gives them; one run of 2 ranks does all the work and the tests check its parts: one step of 2 ranks
with `bs` each gives the weights of one process with `2*bs`; `train_mrnet` reports the AUC of every exam's prediction
(gathered from both ranks, in dataset order), rank 1 writes no file, both ranks record the same epochs; a `BalancedDL`
dealt to 2 ranks keeps `k` of every class in each rank's batch."""
import os, pickle, traceback, multiprocessing as mp
from pathlib import Path
import numpy as np, pandas as pd, torch, pytest
from conftest import free_port, kneeai_cmd

BS = 2 # per rank
Y_BAL = np.array([0]*5 + [1]*3 + [2]*3) # 11 examples, 3 classes: 3 balanced batches of 4, an odd number for 2 ranks

def _learner(data, bs, path):
    "The small MRNet learner of the one-step check: no augmentation, plain SGD, no checkpoint"
    from fastai.optimizer import SGD
    from kneeai.core import set_seed
    from kneeai.volumes import mrnet_dls
    from kneeai.train import mrnet_learner
    from kneeai.learner import SaveBestModel
    set_seed(0)
    dls = mrnet_dls(data, bs=bs, size=32, valid_pct=.5, seed=0, num_workers=0, device='cpu', augment=False)
    learn = mrnet_learner(dls, 'small_cnn', pretrained=False, in_chans=1, csv_log=False, mixed_precision=False, path=path,
                          learner_kwargs=dict(opt_func=SGD))
    learn.remove_cbs([cb for cb in learn.cbs if isinstance(cb, SaveBestModel)])
    return learn

def _one_step(learn):
    "Train one step with the model in eval mode: BatchNorm uses its running statistics (the same on every rank: exact), no dropout"
    from fastai.callback.core import Callback, CancelFitException
    from fastai.callback.core import TrainEvalCallback
    class EvalMode(Callback):
        order = TrainEvalCallback.order + 1
        def before_batch(self): self.model.eval()
        def after_step(self): raise CancelFitException()
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 0.1, cbs=EvalMode())
    return {k: v.detach().cpu().clone() for k,v in learn.model.state_dict().items()}

def _balanced_epochs(n_epochs=2):
    from kneeai.sampling import BalancedDL
    from kneeai.distributed import RankDL
    dl = RankDL(BalancedDL(list(range(len(Y_BAL))), bs=4, k=1, labels=Y_BAL, seed=0))
    return [[b.tolist() for b in dl] for _ in range(n_epochs)]

def _weighted_batches(dl_cls):
    "One epoch of fastai's weighted sampling (`ClassWeightedDL`: draws with replacement), through `dl_cls`"
    from kneeai.sampling import ClassWeightedDL, example_weights
    np.random.seed(0)  # WeightedDL draws from numpy's global generator
    return [b.tolist() for b in dl_cls(ClassWeightedDL(list(range(len(Y_BAL))), bs=4, wgts=example_weights(Y_BAL), shuffle=True))]

def _writes_under(root:Path) -> list:
    "Start recording every file this process opens for writing (or renames) under `root`; the list it fills"
    import sys
    root,seen = str(Path(root).resolve()),[]
    W = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    def hook(event, args):
        if event == 'open':
            path,mode,flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in 'wax+')) or (mode is None and isinstance(flags, int) and flags & W)
            paths = [path] if writing else []
        elif event in ('os.rename', 'os.replace'): paths = args[:2]
        else: return
        for p in paths:
            if isinstance(p, (str, bytes, os.PathLike)) and os.path.abspath(os.fsdecode(p)).startswith(root): seen.append((event, os.fsdecode(p)))
    sys.addaudithook(hook)
    return seen

def _rank_work(rank, data, tmp):
    "What each of the 2 ranks does"
    from kneeai.core import KneeaiError
    from kneeai.distributed import data_parallel
    from kneeai.train import train_mrnet
    res = {}
    learn = _learner(data, BS, tmp/'one_step')
    with data_parallel(learn): res['weights'] = _one_step(learn)
    try:
        with data_parallel(learn, sync_bn=True): pass
    except KneeaiError as e: res['sync_bn_error'] = str(e)
    res['balanced'] = _balanced_epochs()
    from kneeai.distributed import RankDL
    res['weighted'] = _weighted_batches(RankDL)
    writes = _writes_under(tmp) if rank else None
    r = train_mrnet(data, tmp/'run', arch='small_cnn', pretrained=False, in_chans=1, epochs=1, bs=BS, size=32, valid_pct=.5, n_boot=50,
                    test_split='train', seed=0, device='cpu', num_workers=0, progress=False, mixed_precision=False)
    res.update(report=r['report'], values=r['learn'].recorder.values, thresholds=r['learn'].thresholds, writes=writes)
    return res

def _rank_main(rank, world, port, q, *args):
    "A forked rank: the environment torchrun gives, then `_rank_work`; its result (or traceback) on `q`"
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_WORLD_SIZE=str(world), OMP_NUM_THREADS='1')
    torch.set_num_threads(1)
    try:
        from accelerate.state import AcceleratorState, PartialState
        AcceleratorState._reset_state(True); PartialState._reset_state()  # nothing inherited from the parent
        q.put((rank, pickle.dumps(_rank_work(rank, *args))))  # bytes: tensors in a queue would be shared through this process, which exits
    except BaseException: q.put((rank, traceback.format_exc()))
    finally:
        q.close(); q.join_thread()
        os._exit(0)  # a forked child: none of pytest's exit handlers

@pytest.fixture(scope='module')
def two_ranks(mrnet_data, tmp_path_factory):
    "The results of `_rank_work` on 2 forked ranks (gloo), and their folder"
    pytest.importorskip('accelerate')
    import accelerate, kneeai.train, kneeai.distributed, matplotlib.pyplot  # imported once, before the fork, not in each rank
    tmp = tmp_path_factory.mktemp('distributed')
    ctx,port = mp.get_context('fork'),free_port()
    q = ctx.Queue()
    ps = [ctx.Process(target=_rank_main, args=(r, 2, port, q, mrnet_data, tmp)) for r in range(2)]
    for p in ps: p.start()
    try: res = dict(q.get(timeout=300) for _ in ps)
    finally:
        for p in ps:
            p.join(30)
            if p.is_alive(): p.kill()
    errors = {r: v for r,v in res.items() if isinstance(v, str)}
    assert not errors, '\n'.join(f'rank {r}:\n{e}' for r,e in errors.items())
    return [pickle.loads(res[0]), pickle.loads(res[1])], tmp

def test_one_step_equals_one_process(two_ranks, mrnet_data, tmp_path):
    (r0,r1),_ = two_ranks
    from kneeai.distributed import data_parallel
    learn = _learner(mrnet_data, 2*BS, tmp_path)
    w0 = {k: v.clone() for k,v in learn.model.state_dict().items()}
    with data_parallel(learn): one = _one_step(learn)  # one process: data_parallel changes nothing
    assert any(not torch.equal(w0[k], one[k]) for k in one), 'the step changed no weight'
    for k in one:
        torch.testing.assert_close(r0['weights'][k], one[k], rtol=1e-5, atol=1e-6, msg=lambda m: f'{k}: {m}')
        assert torch.equal(r0['weights'][k], r1['weights'][k]), k  # DDP keeps the ranks' weights identical

def test_report_from_all_gathered_predictions(two_ranks, mrnet_data):
    "The report of rank 0 is the report of every exam's prediction by the saved model, in dataset order (its bootstrap depends on the order)"
    (r0,r1),tmp = two_ranks
    from kneeai.learner import Predictor
    from kneeai.metrics import mrnet_report
    from kneeai.core import MRNET_TASKS
    pred = Predictor.load(tmp/'run'/'model', 'cpu')
    probs = pred.predict_split(mrnet_data, 'train')
    y = pd.concat([pd.read_csv(mrnet_data/f'train-{t}.csv', header=None, names=['id', t], dtype={'id': str}).set_index('id') for t in MRNET_TASKS], axis=1)
    y.index = y.index.str.zfill(4)
    y = y.loc[probs.index]
    rep = mrnet_report(y.to_numpy(), probs.to_numpy(), MRNET_TASKS, thresholds=pred.thresholds, n_boot=50, seed=0)
    assert r0['report'].attrs['n_exams'] == len(y) == 12  # every exam, not one rank's 6
    pd.testing.assert_frame_equal(r0['report'], rep, atol=1e-6, rtol=1e-5)
    pd.testing.assert_frame_equal(r1['report'], r0['report'])

def test_ranks_agree_and_only_rank0_writes(two_ranks):
    (r0,r1),tmp = two_ranks
    assert r1['writes'] == [], r1['writes']
    run = tmp/'run'
    for f in ('model/model.safetensors', 'model/config.json', 'report.csv', 'report.md', 'roc.png', 'history.csv', 'models/best.pth'):
        assert (run/f).exists(), f
    assert len(pd.read_csv(run/'history.csv')) == 1
    np.testing.assert_array_equal(np.array(r0['values'], float), np.array(r1['values'], float))  # the epochs' gathered numbers: checkpoints and early stopping agree
    assert r0['thresholds'] == r1['thresholds']

def test_balanced_batches_per_rank(two_ranks):
    "Every batch of each rank holds k=1 of each class; the ranks' batches, dealt in turn, are the one-process epoch (padded with its first batch)"
    (r0,r1),_ = two_ranks
    from kneeai.sampling import BalancedDL
    one = BalancedDL(list(range(len(Y_BAL))), bs=4, k=1, labels=Y_BAL, seed=0)
    for e in range(2):
        epoch = [b.tolist() for b in one]
        assert len(epoch) == 3 and len(r0['balanced'][e]) == len(r1['balanced'][e]) == 2
        for b in r0['balanced'][e] + r1['balanced'][e]: assert len(b) == 4 and (np.bincount(Y_BAL[b], minlength=3) >= 1).all(), b
        dealt = [b for s in range(2) for b in (r0['balanced'][e][s], r1['balanced'][e][s])]
        assert dealt == epoch + epoch[:1]
        assert {i for b in dealt for i in b} == set(range(len(Y_BAL)))

def test_weighted_sampling_per_rank(two_ranks):
    "Weighted sampling draws once (rank 0's draw, broadcast); the ranks' batches, dealt in turn, are the one-process draw (padded to full batches)"
    (r0,r1),_ = two_ranks
    one = _weighted_batches(lambda dl: dl)
    dealt = [b for s in range(len(r0['weighted'])) for b in (r0['weighted'][s], r1['weighted'][s])]
    assert len(dealt) == 2*len(r0['weighted']) and all(len(b) == 4 for b in dealt)
    flat,draw = [i for b in dealt for i in b],[i for b in one for i in b]  # the draw, then its start again as padding
    assert flat[:len(draw)] == draw and flat[len(draw):] == draw[:len(flat) - len(draw)]

def test_fastai_distributed_dl_splits_balanced_batches():
    "Why `RankDL`: fastai's `DistributedDL` cuts rank slices inside a balanced batch, leaving batches without some class"
    from fastai.distributed import DistributedDL
    from kneeai.sampling import BalancedDL
    class Local(DistributedDL):
        def _broadcast(self, t, rank): return list(t)
    bs = [b.tolist() for r in range(2) for b in Local(BalancedDL(list(range(len(Y_BAL))), bs=4, k=1, labels=Y_BAL, seed=0), rank=r, world_size=2)]
    assert any(not (np.bincount(Y_BAL[b], minlength=3) >= 1).all() for b in bs)

def test_sync_bn_refused_on_cpu(two_ranks):
    (r0,_),_ = two_ranks
    assert 'SyncBatchNorm runs on GPUs only' in r0['sync_bn_error']

def test_launch_option(monkeypatch, tmp_path, mrnet_data):
    "`kneeai train ... --launch 2` runs the same command line, without --launch, under accelerate launch"
    import subprocess, kneeai.distributed as kd
    ran = []
    monkeypatch.setattr(kd.subprocess, 'run', lambda cmd, **kw: ran.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    r = kneeai_cmd('train', 'mrnet', '--data', mrnet_data, '--out', tmp_path/'o', '--launch', '2', '--epochs', '1')
    assert r.returncode == 0, r.stderr
    cmd = ran[0]
    assert cmd[1:4] == ['-m', 'accelerate.commands.launch', '--multi_gpu'] and cmd[cmd.index('--num_processes') + 1] == '2'
    assert '--launch' not in cmd and cmd[cmd.index('--no_python') + 2:] == ['train', 'mrnet', '--data', str(mrnet_data), '--out', str(tmp_path/'o'), '--epochs', '1']
    assert not (tmp_path/'o').exists()  # the launcher itself trains nothing
