"""Load on `kneeai serve`: latency, throughput, errors and memory at concurrency 1, 8 and 32, with and without dynamic batching.

The question (issue 18): does the service hold load — no errors among good requests, bad requests answered with a 4xx, no
memory growth over 1,000 requests, health checks answered while batches run — and what does dynamic batching buy?

Two services per setting, each a real `kneeai serve` process on a free loopback port: an MRNet `TripleMRNet` fed the nine
real MRNet sample exams (`shared/data/mrnet-samples`; else synthetic exams), and a Kellgren-Lawrence radiograph model
fed real knee radiographs (`shared/data/knee-kl` PNGs; else synthetic DICOM radiographs). The weights are random (the
work does not depend on them); the backbone and input size are options (default: `small_cnn`, the demo's, at 64 px
for exams and 224 px for radiographs). A bounded asyncio client (httpx) sends requests for `--seconds` per concurrency
level (and at most `--max-requests`); one request in ten is deliberately bad (a truncated volume or DICOM, a text file)
and must get a 4xx. Meanwhile a probe asks `/healthz` every 100 ms. Memory: the server's resident set size after a
warm-up and after 1,000 more requests (concurrency 8). Printed with the load average, as the machine may be shared.

Usage: `python bench/serve_load.py [--seconds 60] [--levels 1,8,32] [--workloads exams,radiographs] [--device cpu] [--threads N]`.
"""
import argparse, asyncio, collections, io, json, os, random, signal, socket, subprocess, sys, tempfile, time, warnings
from pathlib import Path
from types import SimpleNamespace
warnings.filterwarnings('ignore')
import numpy as np, httpx

def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

def load() -> str: return '/'.join(f'{x:.2f}' for x in os.getloadavg())

def rss_mb(pid:int) -> float:
    "Resident set size of process `pid` (Linux), in MiB"
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'): return int(line.split()[1])/1024
    return float('nan')

def npy_bytes(a) -> bytes:
    buf = io.BytesIO(); np.save(buf, a); return buf.getvalue()

def models(tmp:Path, arch:str, exam_size:int, xr_size:int) -> dict:
    "An MRNet and a KL-grade radiograph model with random weights, saved as `kneeai train` saves them"
    from kneeai.core import PLANES
    from kneeai.volumes import data_config
    from kneeai.radiographs import radiograph_data_config
    from kneeai.models import model_from_config
    from kneeai.learner import save_model
    save = lambda mc, dc, name: save_model(SimpleNamespace(model=model_from_config(mc), model_config=mc, thresholds=None,
                                                           dls=SimpleNamespace(data_config=dc)), tmp/name)
    return dict(exams=save(dict(kind='TripleMRNet', arch=arch, planes=list(PLANES), n_out=3, shared=False, in_chans=1), data_config(size=exam_size), 'mrnet'),
                radiographs=save(dict(kind='RadiographNet', arch=arch, n_out=5, in_chans=1, head='linear', dropout=0.),
                                 radiograph_data_config('kl', classes=range(5), label_cols=('kl_grade',), size=xr_size), 'kl'))

def exam_requests(tmp:Path) -> tuple:
    "Good requests (one real exam each, the plane in the form field as MRNet stores it) and bad ones, and where they came from"
    from kneeai.core import PLANES, reference_data
    root = reference_data('mrnet-samples')
    if root is not None:
        ids,where = [(s, f.stem) for s in ('train', 'valid') for f in sorted((root/s/'sagittal').glob('*.npy'))],'the nine real MRNet sample exams'
        files = [{p: root/s/p/f'{i}.npy' for p in PLANES} for s,i in ids]
    else:
        from kneeai.synthetic import synth_mrnet
        data = synth_mrnet(tmp/'synth', n_train=9, n_valid=1, size=256, seed=0, progress=False)
        files,where = [{p: data/'train'/p/f'{i:04d}.npy' for p in PLANES} for i in range(9)],'nine synthetic exams at 256 px'
    good = [[(p, (f.name, f.read_bytes())) for p,f in e.items()] for e in files]
    bad = [[(p, (n, b[:len(b)//3] if p == 'axial' else b)) for p,(n,b) in good[0]],  # a truncated volume
           [('files', ('notes.txt', b'not a volume'))], good[1][:2]]  # a text file; an exam without its axial volume
    return good, bad, where

def radiograph_requests(tmp:Path, n:int=24) -> tuple:
    "Good requests (one real knee radiograph each) and bad ones (a truncated DICOM, a text file, a broken PNG)"
    from kneeai.core import reference_data
    from pydicom.data import get_testdata_file
    root = reference_data('knee-kl')
    if root is not None:
        fns,where = sorted((root/'images').rglob('*.png'))[::60][:n],f'{n} real knee radiographs (knee-kl, PNG)'
    else:
        from kneeai.synthetic_radiographs import synth_radiographs
        df = synth_radiographs(tmp/'xr', n=n, size=512, seed=0, progress=False)
        fns,where = [tmp/'xr'/f for f in df.file],f'{n} synthetic DICOM radiographs'
    good = [[('files', (f.name, f.read_bytes()))] for f in fns]
    dcm = Path(get_testdata_file('CT_small.dcm')).read_bytes()
    bad = [[('files', ('cut.dcm', dcm[:1500]))], [('files', ('notes.txt', b'not an image'))], [('files', ('broken.png', good[0][0][1][1][:200]))]]
    return good, bad, where

class Server:
    "`kneeai serve` on a free loopback port, stopped with SIGTERM"
    def __init__(self, model:Path, log:Path, *opts):
        self.port,self.log = free_port(),log
        self.url = f'http://127.0.0.1:{self.port}'
        exe = Path(sys.executable).parent/'kneeai'
        with open(log, 'w') as f:
            self.proc = subprocess.Popen([str(exe), 'serve', '--model', str(model), '--port', str(self.port), '--log-level', 'warning', *map(str, opts)],
                                         stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        t0 = time.time()
        while time.time() - t0 < 180:
            if self.proc.poll() is not None: raise SystemExit(f'kneeai serve exited:\n{log.read_text()[-2000:]}')
            try:
                if httpx.get(f'{self.url}/readyz', timeout=2).status_code == 200: return
            except httpx.HTTPError: time.sleep(.3)
        raise SystemExit('kneeai serve did not start')
    def stop(self):
        os.killpg(self.proc.pid, signal.SIGTERM)
        try: self.proc.wait(20)
        except subprocess.TimeoutExpired: os.killpg(self.proc.pid, signal.SIGKILL)

async def drive(url:str, good:list, bad:list, concurrency:int, seconds:float, max_requests:int, seed:int=0) -> dict:
    "Requests from `concurrency` clients for `seconds` (or `max_requests`): one in ten bad; latencies of the good ones"
    rng,lat,res = random.Random(seed),[],dict(good=0, good_errors=0, bad=0, bad_4xx=0, bad_other=0)
    statuses = collections.Counter()  # of the good requests that failed (0: no answer)
    deadline,sent = time.perf_counter() + seconds,[0]
    health = []
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=concurrency + 1)) as c:
        async def worker():
            while time.perf_counter() < deadline and sent[0] < max_requests:
                sent[0] += 1
                is_bad = bool(bad) and rng.random() < .1
                files = rng.choice(bad if is_bad else good)
                t0 = time.perf_counter()
                try: status = (await c.post(f'{url}/v1/predict', files=files)).status_code
                except httpx.HTTPError: status = 0
                dt = time.perf_counter() - t0
                if is_bad:
                    res['bad'] += 1
                    res['bad_4xx' if 400 <= status < 500 else 'bad_other'] += 1
                else:
                    res['good'] += 1; lat.append(dt)
                    if status != 200: res['good_errors'] += 1; statuses[status] += 1
        async def probe():
            while time.perf_counter() < deadline and sent[0] < max_requests:
                t0 = time.perf_counter()
                try: ok = (await c.get(f'{url}/healthz')).status_code == 200
                except httpx.HTTPError: ok = False
                health.append(time.perf_counter() - t0 if ok else float('inf'))
                await asyncio.sleep(.1)
        t0 = time.perf_counter()
        await asyncio.gather(probe(), *[worker() for _ in range(concurrency)])
        wall = time.perf_counter() - t0
    ms = lambda q, xs: 1000*float(np.quantile(xs, q)) if xs else float('nan')
    return dict(res, good_error_statuses=dict(sorted(statuses.items())), requests=res['good'] + res['bad'], rps=(res['good'] + res['bad'])/wall, p50=ms(.5, lat), p95=ms(.95, lat), p99=ms(.99, lat),
                health_max=1000*max(health) if health else float('nan'))

def batch_totals(url:str) -> tuple:
    "(requests, forward passes) so far, from the server's metrics"
    txt = httpx.get(f'{url}/metrics').text
    val = lambda k: float(next(l.split()[-1] for l in txt.splitlines() if l.startswith(k + ' ')))
    return val('kneeai_batch_size_sum'), val('kneeai_batch_size_count')

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--seconds', type=float, default=60, help='per concurrency level and setting (default: %(default)s)')
    ap.add_argument('--levels', default='1,8,32', help='concurrency levels (default: %(default)s)')
    ap.add_argument('--workloads', default='exams,radiographs')
    ap.add_argument('--max-requests', type=int, default=100_000, help='bound per run (default: %(default)s)')
    ap.add_argument('--memory-requests', type=int, default=1000, help='requests between the two memory readings (0: none)')
    ap.add_argument('--arch', default='small_cnn')
    ap.add_argument('--exam-size', type=int, default=64)
    ap.add_argument('--xr-size', type=int, default=224)
    ap.add_argument('--max-batch', type=int, default=8)
    ap.add_argument('--batch-wait-ms', type=float, default=5)
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--threads', type=int, default=None, help="torch's CPU threads in the server (default: one per core)")
    a = ap.parse_args()
    levels = [int(x) for x in a.levels.split(',')]
    tmp = Path(tempfile.mkdtemp())
    ms = models(tmp, a.arch, a.exam_size, a.xr_size)
    reqs = dict(exams=exam_requests(tmp), radiographs=radiograph_requests(tmp))
    print(f'{os.cpu_count()} CPUs; models: {a.arch}, exams at {a.exam_size} px, radiographs at {a.xr_size} px, random weights, on {a.device}; '
          f'{a.seconds:g} s per run, 10 % bad requests; server threads: {a.threads or "torch default"}')
    rows = []
    for wl in a.workloads.split(','):
        good,bad,where = reqs[wl]
        print(f'\n{wl}: {where}')
        # both servers run side by side and the levels alternate between them, so that a change in the machine's load
        # (it may be shared) falls on both alike
        srvs = {}
        try:
            for batching in (True, False):
                opts = ['--max-batch', a.max_batch if batching else 1, '--batch-wait-ms', a.batch_wait_ms, '--device', a.device, '--max-files', 4,
                        *(['--threads', a.threads] if a.threads else [])]
                srvs[batching] = Server(ms[wl], tmp/f'{wl}_{batching}.log', *opts)
                asyncio.run(drive(srvs[batching].url, good, [], 4, 3, 40))  # warm-up
            for c in levels:
                for batching,srv in srvs.items():
                    n0,b0 = batch_totals(srv.url)
                    r = asyncio.run(drive(srv.url, good, bad, c, a.seconds, a.max_requests))
                    n1,b1 = batch_totals(srv.url)
                    r.update(workload=wl, batching=f'max {a.max_batch}, {a.batch_wait_ms:g} ms' if batching else 'off', concurrency=c,
                             mean_batch=round((n1 - n0)/max(b1 - b0, 1), 2), load=load())
                    rows.append(r)
                    print(f"  batching {r['batching']:<14} c={c:<3} {r['requests']:>6} req  {r['rps']:7.1f} req/s  p50 {r['p50']:7.1f}  p95 {r['p95']:7.1f}  "
                          f"p99 {r['p99']:7.1f} ms  good errors {r['good_errors']}{' ' + str(r['good_error_statuses']) if r['good_errors'] else ''}  bad 4xx {r['bad_4xx']}/{r['bad']}  "
                          f"healthz max {r['health_max']:.0f} ms  mean batch {r['mean_batch']}  load {r['load']}", flush=True)
            for batching,srv in srvs.items():
                if not a.memory_requests: break
                before = rss_mb(srv.proc.pid)
                m = asyncio.run(drive(srv.url, good, bad, 8, 3600, a.memory_requests, seed=1))
                after = rss_mb(srv.proc.pid)
                print(f'  memory, batching {"on" if batching else "off"}: RSS {before:.0f} MiB after the runs above, {after:.0f} MiB after '
                      f'{m["requests"]} more requests ({after - before:+.1f} MiB; good errors {m["good_errors"]}); load {load()}', flush=True)
        finally:
            for srv in srvs.values(): srv.stop()
            for batching,srv in srvs.items():  # a 500 is kneeai's own fault: the log has each one's exception (e.g. issue 18's SystemError)
                faults = [l.split(': ', 1)[-1] for l in srv.log.read_text().splitlines() if ' ERROR kneeai.serve ' in l]
                print(f'  server log, batching {"on" if batching else "off"}: {len(faults)} internal errors (500)'
                      + (f': {dict(collections.Counter(faults))}' if faults else ''), flush=True)
    (tmp/'results.json').write_text(json.dumps(rows, indent=1))
    bad_good = sum(r['good_errors'] for r in rows)
    print(f'\nerrors among good requests: {bad_good}; results in {tmp/"results.json"}')
    if bad_good: raise SystemExit(1)

if __name__ == '__main__': main()
