"`from kneeai.all import *` gives the public API of every module (except the command and the app)."
import importlib, pkgutil
import kneeai

def test_all_reexports_every_module():
    ns = {}
    exec('from kneeai.all import *', ns)
    skip = {'all', 'cli', 'app', 'serve', '_modidx'}  # the faces: not re-exported (see all.py)
    mods = [m.name for m in pkgutil.iter_modules(kneeai.__path__) if m.name not in skip]
    missing = {m: [n for n in importlib.import_module(f'kneeai.{m}').__all__ if n not in ns] for m in mods}
    missing = {m: ns_ for m,ns_ in missing.items() if ns_}
    # names defined by several modules (fastai typedispatch functions such as show_batch) are present once
    assert not missing, missing
    for name in ('mrnet_dls', 'mrnet_learner', 'radiograph_learner', 'BalancedDL', 'exam_cams', 'FixMatch', 'dcm2float', 'synth_mrnet'):
        assert name in ns, name
