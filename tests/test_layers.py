"""The layer rule of DESIGN.md: a kneeai module imports only modules below it, never above, not even inside a function.

`LAYERS` is the order of the package, bottom first. Two checks per module: its source (every `import`, at the top or inside
a function) names no module above it, and importing it in a fresh interpreter loads no module above it."""
import ast, json, subprocess, sys
from pathlib import Path
import pytest
import kneeai

LAYERS = ['core', 'dicom', 'deid', 'preprocess', 'mri', 'synthetic', 'synthetic_radiographs', 'volumes', 'radiographs', 'sampling',
          'models', 'metrics', 'learner', 'distributed', 'tracking', 'train', 'radiograph_train', 'multiview', 'pretrain', 'semisup',
          'tune', 'interpret', 'demo', 'serve', 'active', 'cli', 'app']
PKG = Path(kneeai.__file__).parent
RANK = {m: i for i,m in enumerate(LAYERS)}

def kneeai_imports(mod:str) -> set:
    "The kneeai modules that `mod`'s source imports, anywhere in the file"
    tree,found = ast.parse((PKG/f'{mod}.py').read_text()),set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            name = node.module or ''
            if node.level == 1: found |= {name.split('.')[0]} if name else {a.name for a in node.names}
            elif name == 'kneeai': found |= {a.name for a in node.names}
            elif name.startswith('kneeai.'): found.add(name.split('.')[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split('.')[1] for a in node.names if a.name.startswith('kneeai.')}
    return found & set(LAYERS)

def test_every_module_has_a_layer():
    mods = {p.stem for p in PKG.glob('*.py')} - {'__init__', '_modidx', 'all'}
    assert mods == set(LAYERS), f'modules without a layer: {mods - set(LAYERS)}; layers without a module: {set(LAYERS) - mods}'

@pytest.mark.parametrize('mod', LAYERS)
def test_source_imports_only_lower_layers(mod):
    above = sorted(m for m in kneeai_imports(mod) if RANK[m] >= RANK[mod] and m != mod)
    assert not above, f'kneeai.{mod} imports {above}, which are not below it in {LAYERS}'

def _loaded(mod:str) -> list:
    "The kneeai modules loaded by importing `mod` (run in a process forked before any kneeai module was imported)"
    import importlib
    importlib.import_module(f'kneeai.{mod}')
    return sorted(m.split('.')[1] for m in sys.modules if m.startswith('kneeai.'))

_HEAVY = ('torch', 'torchvision', 'fastai.basics', 'fastai.callback.all', 'fastai.vision.all', 'sklearn.metrics', 'pydicom',
          'kornia', 'skimage.exposure', 'scipy.ndimage', 'pandas', 'matplotlib.pyplot', 'PIL.Image')

def test_importing_a_module_loads_nothing_above_it():
    "Checked in fresh processes forked from one that has imported the heavy third-party packages, but no kneeai module"
    code = ('import importlib, json, multiprocessing as mp, sys, warnings; warnings.simplefilter("ignore")\n'
            f'for h in {_HEAVY!r}: importlib.import_module(h)\n'
            'assert not [m for m in sys.modules if m.startswith("kneeai.")]\n'
            'sys.path.insert(0, ' + repr(str(Path(__file__).parent)) + ')\n'
            'from test_layers import _loaded, LAYERS\n'
            'mods = [m for m in LAYERS if m != "app"]\n'
            'with mp.get_context("fork").Pool(2) as pool: print(json.dumps(dict(zip(mods, pool.map(_loaded, mods, chunksize=1)))))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    bad = {m: sorted(o for o in l if o in RANK and RANK[o] > RANK[m]) for m,l in loaded.items()}
    assert not any(bad.values()), {m: b for m,b in bad.items() if b}
    assert loaded['core'] == ['core'] and 'learner' in loaded['train']  # the check sees what is imported

def test_the_check_sees_imports_inside_functions(tmp_path, monkeypatch):
    "The source check is not fooled by an import hidden in a function body"
    (tmp_path/'core.py').write_text('def f():\n    from kneeai.app import page\n    from . import cli\n')
    monkeypatch.setattr(sys.modules[__name__], 'PKG', tmp_path)
    assert kneeai_imports('core') == {'app', 'cli'}
