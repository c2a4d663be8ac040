"""`bench/scaling.py`'s fits (its measurements are too slow for the test run): the exponent of a power law and the
fixed cost and cost per unit of an affine cost are recovered, and local exponents climb towards 1 as a fixed cost is amortised."""
import sys
from pathlib import Path
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]/'bench'))
from scaling import fit_power

def test_power_law_exponent():
    n = [4, 8, 16, 32, 64]
    f = fit_power(n, [.01*x**1.5 for x in n])
    assert abs(f['exponent'] - 1.5) < 1e-9 and f['se'] < 1e-9 and np.allclose(f['local'], 1.5)

def test_fixed_cost_and_local_exponents():
    n = [4, 16, 64, 256, 1024]
    f = fit_power(n, [8 + .02*x for x in n])  # a command: 8 s to start, 20 ms per file
    assert abs(f['fixed'] - 8) < 1e-6 and abs(f['per_unit'] - .02) < 1e-9
    assert all(a < b for a,b in zip(f['local'], f['local'][1:])) and f['local'][0] < .1 and f['local'][-1] > .5
