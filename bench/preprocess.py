"""Images per second of `kneeai.preprocess.preprocess_folder` against a plain per-file loop, on synthetic DICOM radiographs.

The plain loop is written in the style of the reference pipelines: for each file, one after another, pydicom reads
it, the pixels are scaled to [0, 1] (MONOCHROME1 inverted), scikit-image's CLAHE runs at full resolution, scikit-image
resizes to the output size, and PIL saves a 16-bit PNG. `preprocess_folder` does more (exposed field, body mask,
body percentiles, background cleaning, knee localisation and crop) and writes the same kind of file, in
`--workers` processes. Both run on the same files, in the same run, `--reps` times each, alternating; the best time
of each is kept. The data set (`synth_radiographs(n, seed=0, size=512)`: mixed uncompressed, RLE, JPEG 2000 and
JPEG-LS files) is written once to `--data` (default: a folder in the temporary directory) and reused. Besides
images per second (wall clock), it prints the CPU time per image (this process and its workers), which depends much
less on what else the machine is running: on a busy machine the wall-clock ratio understates what parallelism gives.

With `--decode`, it measures instead what kneeai's safe decoding path costs per image (issue 13): `dcm2float` on
one file of each transfer syntax the synthetic set holds (at `--decode-size`, 2048 by default, a radiograph's
size), as it runs (JPEG-LS and JPEG 2000 decoded in kneeai's decoding child process, with the header checks) and
with the child switched off (everything decoded in this process: the path before issue 13, plus the checks); the
difference is the cost of the child. Best of `--reps` x 10 calls each, alternating; wall clock, and CPU time of this
process plus the child's (read from /proc: Linux), which a busy machine disturbs much less.

Usage: `python bench/preprocess.py [--n 150] [--size 256] [--workers 2] [--reps 2] [--data DIR] [--decode [--decode-size 2048]]`.
"""
import argparse, os, resource, shutil, tempfile, time, warnings
warnings.filterwarnings('ignore', message='.*torch.jit.script.*')
from pathlib import Path
import numpy as np, pydicom
from PIL import Image
from skimage import exposure, transform
from kneeai.dicom import dicom_files
from kneeai.preprocess import preprocess_folder
from kneeai.synthetic_radiographs import synth_radiographs

def plain_loop(files, src, dest, size):
    "The reference-style pipeline: one file after another"
    for fn in files:
        ds = pydicom.dcmread(fn)
        a = ds.pixel_array.astype(np.float32)
        if ds.PhotometricInterpretation == 'MONOCHROME1': a = a.max() - a
        a = (a - a.min())/max(a.max() - a.min(), 1e-6)
        a = exposure.equalize_adapthist(a)
        a = transform.resize(a, (size, size), anti_aliasing=True)
        out = dest/Path(fn).relative_to(src).with_suffix('.png')
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.rint(a*65535).astype(np.uint16)).save(out)

def cpu_seconds() -> float:
    "User and system CPU time of this process and of its finished children (the worker processes)"
    return sum(getattr(resource.getrusage(w), k) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) for k in ('ru_utime', 'ru_stime'))

def timed(f, *args, **kwargs):
    "Wall-clock seconds, CPU seconds and result of `f(*args, **kwargs)`"
    t,c = time.perf_counter(),cpu_seconds(); r = f(*args, **kwargs)
    return time.perf_counter() - t, cpu_seconds() - c, r

def decode_cost(size:int, reps:int):
    "ms per `dcm2float` call, per transfer syntax, with and without the decoding child (see the module's docstring)"
    import io, kneeai.dicom as kd
    from kneeai.dicom import dcm2float
    from kneeai.synthetic_radiographs import radiograph_plan, synth_radiograph_row, radiograph_dataset, writable_transfer_syntaxes
    files = {}
    for ts in writable_transfer_syntaxes():
        row = radiograph_plan(1, seed=0, transfer_syntaxes={ts: 1}).iloc[0]
        b = io.BytesIO(); radiograph_dataset(*synth_radiograph_row(row, 0, size), row, 0).save_as(b, enforce_file_format=True)
        files[ts] = b.getvalue()
    safe = kd._in_process
    def cpu():
        "CPU seconds of this process and of the decoding child so far"
        p = kd._child.proc
        if p is None or p.poll() is not None: return time.process_time()
        f = Path(f'/proc/{p.pid}/stat').read_text().rsplit(')', 1)[1].split()
        return time.process_time() + (int(f[11]) + int(f[12]))/os.sysconf('SC_CLK_TCK')
    print(f'dcm2float on {size}x{size} synthetic radiographs (bytes in memory), best of {reps}x10 calls; '
          f'load average before: {" ".join(f"{x:.2f}" for x in os.getloadavg())}', flush=True)
    for ts,data in files.items():
        t = time.perf_counter(); dcm2float(data)  # starts the child (once per process) outside the timing
        if ts == 'jpeg2000': print(f'  first compressed image, with the start of the child: {time.perf_counter() - t:.2f} s', flush=True)
        best,bcpu = {},{}
        for r in range(reps):
            for mode in ('in process', 'safe path'):
                kd._in_process = (lambda t: True) if mode == 'in process' else safe
                try:
                    t,c = time.perf_counter(),cpu()
                    for _ in range(10): dcm2float(data)
                    best[mode] = min(best.get(mode, float('inf')), (time.perf_counter() - t)/10)
                    bcpu[mode] = min(bcpu.get(mode, float('inf')), (cpu() - c)/10)
                finally: kd._in_process = safe
        child = 'child' if not safe(pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID) else 'this process'
        print(f'  {ts:9s} ({len(data)/1e6:5.2f} MB, decoded in {child:12s}): in process {1000*best["in process"]:7.1f} ms, '
              f'safe path {1000*best["safe path"]:7.1f} ms, difference {1000*(best["safe path"] - best["in process"]):+6.1f} ms/image; '
              f'CPU {1000*bcpu["in process"]:7.1f} vs {1000*bcpu["safe path"]:7.1f} ms, {1000*(bcpu["safe path"] - bcpu["in process"]):+6.1f} ms/image', flush=True)
    print(f'(load average after: {" ".join(f"{x:.2f}" for x in os.getloadavg())})')

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=150, help='number of synthetic radiographs')
    ap.add_argument('--size', type=int, default=256, help='side of the output images')
    ap.add_argument('--workers', type=int, default=os.cpu_count(), help='processes for preprocess_folder')
    ap.add_argument('--reps', type=int, default=2, help='timed runs of each (the best is kept)')
    ap.add_argument('--data', type=Path, default=None, help='folder for the synthetic DICOM set (written if absent)')
    ap.add_argument('--decode', action='store_true', help="measure the safe decoding path's cost per image instead")
    ap.add_argument('--decode-size', type=int, default=2048, help='side of the images for --decode')
    args = ap.parse_args()
    if args.decode: return decode_cost(args.decode_size, args.reps)
    src = args.data or Path(tempfile.gettempdir())/f'kneeai-bench-preprocess-n{args.n}'
    if not (src/'labels.csv').exists():
        print(f'writing {args.n} synthetic radiographs to {src} (not timed)...', flush=True)
        synth_radiographs(src, n=args.n, seed=0, size=512, progress=False)
    files = dicom_files(src)
    for fn in files: fn.read_bytes() # into the page cache, for both
    work = Path(tempfile.mkdtemp(prefix='kneeai-bench-'))
    print(f'{len(files)} DICOM files of 512x512 -> {args.size}x{args.size} 16-bit PNG; {os.cpu_count()} CPUs; '
          f'load average before: {" ".join(f"{x:.2f}" for x in os.getloadavg())}', flush=True)
    best,cpu = dict(plain=float('inf'), kneeai=float('inf')),dict(plain=float('inf'), kneeai=float('inf'))
    try:
        for r in range(args.reps):
            for name in ('plain', 'kneeai'):
                dest = work/f'{name}{r}'
                if name == 'plain': t,c,_ = timed(plain_loop, files, src, dest, args.size)
                else:
                    t,c,df = timed(preprocess_folder, src, dest, size=args.size, n_workers=args.workers, progress=False)
                    assert (df.status == 'ok').all(), df[df.status != 'ok']
                best[name],cpu[name] = min(best[name], t),min(cpu[name], c)
                print(f'  run {r+1} {name:7s} {len(files)/t:6.1f} images/s, {1000*c/len(files):5.1f} CPU ms/image', flush=True)
    finally: shutil.rmtree(work, ignore_errors=True)
    plain,ours = len(files)/best['plain'],len(files)/best['kneeai']
    n = len(files)
    print(f'plain per-file loop (pydicom, scale, skimage CLAHE, resize, save): {plain:6.1f} images/s  ({1000*cpu["plain"]/n:5.1f} CPU ms/image)')
    print(f'preprocess_folder (n_workers={args.workers}):{" "*22}{ours:6.1f} images/s  ({1000*cpu["kneeai"]/n:5.1f} CPU ms/image)')
    print(f'ratio: {ours/plain:.2f}x images/s, {cpu["plain"]/cpu["kneeai"]:.2f}x less CPU per image   '
          f'(load average after: {" ".join(f"{x:.2f}" for x in os.getloadavg())})')

if __name__ == '__main__': main()
