"""Speed of `kneeai.synthetic_radiographs`: N knee radiographs at SIZE pixels written as DICOM files.

Issue 3's target is 100 radiographs at 512 px in under 20 s on the project's 2-core machine. Prints the time to
write the whole data set (`synth_radiographs`), the part of it spent drawing the images (`synth_radiograph_row`
alone, no DICOM encoding or writing), and the ratio of the target to the measured time (>1 means faster than needed).

    .venv/bin/python bench/synth_radiographs_speed.py [N] [SIZE]
"""
import sys, time, tempfile, os
from kneeai.synthetic_radiographs import synth_radiographs, radiograph_plan, synth_radiograph_row

def main(n=100, size=512, budget=20.):
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        labels = synth_radiographs(d, n=n, seed=0, size=size, progress=False)
        total = time.perf_counter() - t
    plan = radiograph_plan(n, seed=0)
    t = time.perf_counter()
    for _,row in plan.iterrows(): synth_radiograph_row(row, seed=0, size=size)
    draw = time.perf_counter() - t
    print(f'cpus: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}')
    print(f'transfer syntaxes: {labels.transfer_syntax.value_counts().to_dict()}')
    print(f'synth_radiographs, {n} images at {size} px: {total:.2f} s ({1000*total/n:.0f} ms/image)')
    print(f'  of which drawing the images: {draw:.2f} s; encoding and writing DICOM: {total-draw:.2f} s')
    print(f'target for {n} images: {budget*n/100:.1f} s; target / measured = {budget*n/100/total:.2f}x')

if __name__ == '__main__':
    main(*(int(a) for a in sys.argv[1:3]))
