"""`kneeai.tune` with its real storage: two worker processes share one SQLite study (each trial run by one of them, one
trial pruned), and a study whose worker was killed in the middle of a trial resumes under its name, the killed trial
failed by its stopped heartbeat and run again.

The workers are forked from the test process, which has imported torch and fastai already (a fresh interpreter spends
about five seconds on that); neither the study nor its database is opened before they fork."""
import multiprocessing as mp, os, signal, time, warnings
from pathlib import Path
import pytest
optuna = pytest.importorskip('optuna')
pytest.importorskip('optuna_integration')
import torch
from fastai.callback.core import Callback
from kneeai.synthetic_radiographs import synth_radiographs
from kneeai.tune import tune

SPACE = dict(arch='small_cnn', size=32, bs=8, sampler=None, augment=0., loss=['ce', 'focal'])
RUN = dict(epochs=1, retrain=False, heartbeat=1, device='cpu', prep=False, seed=0, study='shared', test_pct=.25)  # test_pct named: trials still get none

class PruneSecond(optuna.pruners.BasePruner):
    "Prune the second trial this worker runs, at its first report: a pruned trial, whatever the metrics"
    def __init__(self): self.seen = []
    def prune(self, study, trial):
        if trial.number not in self.seen: self.seen.append(trial.number)
        return len(self.seen) > 1 and trial.number == self.seen[1]

class HangSecond(Callback):
    "In the second trial this worker runs: write `flag` and wait there to be killed"
    def __init__(self, flag): self.flag,self.n = flag,0
    def before_fit(self):
        if hasattr(self, 'gather_preds'): return  # `get_preds` (the recipe's predictions) also starts with before_fit
        self.n += 1
        if self.n == 2:
            Path(self.flag).write_text(str(os.getpid()))
            time.sleep(600)

def _worker(data, out, trials, mode, sampler_seed):
    torch.set_num_threads(1)
    warnings.simplefilter('ignore')
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    extra = dict(pruner=PruneSecond()) if mode == 'prune' else dict(pruner='none', cbs=[HangSecond(Path(out)/'hanging')])
    tune('radiographs', data, out, trials=trials, space=SPACE, sampler_seed=sampler_seed, **RUN, **extra)

@pytest.fixture
def xr(tmp_path):
    synth_radiographs(tmp_path/'xr', n=32, size=64, seed=0, fracture_rate=.5, progress=False)
    return tmp_path/'xr'/'labels.csv'

def test_workers_share_a_study_and_a_killed_one_resumes(xr, tmp_path):
    out,ctx = tmp_path/'study',mp.get_context('fork')
    a = ctx.Process(target=_worker, args=(xr, out, 3, 'prune', 1))   # stops when the study holds 3 finished trials
    b = ctx.Process(target=_worker, args=(xr, out, 10, 'hang', 2))   # one trial, then hangs in its second
    a.start(); b.start()
    try:
        t0 = time.time()
        while not (out/'hanging').exists():
            assert b.is_alive() and time.time() - t0 < 300, 'worker b never reached its second trial'
            time.sleep(.05)
        os.kill(b.pid, signal.SIGKILL); b.join(); t_kill = time.time()
        a.join(300)
        assert a.exitcode == 0
    finally:
        for p in (a, b):
            if p.is_alive(): p.kill()
    study = optuna.load_study(study_name='shared', storage=f"sqlite:///{out/'study.db'}")
    ts = study.get_trials(deepcopy=False)
    S = optuna.trial.TrialState
    worker = {t.number: int(t.user_attrs['worker'].split(':')[1]) for t in ts}
    assert len({t.number for t in ts}) == len(ts) == len({t._trial_id for t in ts})  # no trial twice
    assert {worker[t.number] for t in ts if t.state == S.COMPLETE} == {a.pid, b.pid}  # trials completed by both workers
    pruned = [t for t in ts if t.state == S.PRUNED]
    assert len(pruned) == 1 and worker[pruned[0].number] == a.pid and list(pruned[0].intermediate_values) == [0]
    hung = [t for t in ts if t.state == S.RUNNING]
    assert len(hung) == 1 and worker[hung[0].number] == b.pid
    # the killed study resumes under its name: the silent trial is failed (no heartbeat for more than 2 s) and its parameters run again.
    # SQLite's CURRENT_TIMESTAMP, which Optuna stores heartbeats with, has whole seconds: a heartbeat at 10.9 s reads 10 and
    # is stale (more than 2 s) only when the clock reads 13, up to 3.1 s after it; wait 4 s after the kill (it failed once at 2.5 s).
    n_done = len([t for t in ts if t.state in (S.COMPLETE, S.PRUNED)])
    time.sleep(max(0., 4. - (time.time() - t_kill)))
    n_threads = torch.get_num_threads(); torch.set_num_threads(1)
    try: res = tune('radiographs', xr, out, trials=n_done + 1, space=SPACE, pruner='none', **RUN)
    finally: torch.set_num_threads(n_threads)
    ts = res['study'].get_trials(deepcopy=False)
    test_hung = ts[hung[0].number]
    assert res['study']._study_id == study._study_id and test_hung.state == S.FAIL
    retried = [t for t in ts if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == hung[0].number]
    assert len(retried) == 1 and retried[0].state == S.COMPLETE and retried[0].params == hung[0].params
    assert len([t for t in ts if t.state in (S.COMPLETE, S.PRUNED)]) == n_done + 1
