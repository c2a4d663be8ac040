"""Every option of every `kneeai` subcommand has the default of the parameter it feeds in the function the subcommand
calls, and offers the library's own choices: changing a default on one side only fails here."""
import argparse, inspect
import pytest
from kneeai.cli import kneeai_parser, _parse, MAX_UPLOAD_MB
from kneeai.synthetic import synth_mrnet
from kneeai.synthetic_radiographs import synth_radiographs, synth_mura
from kneeai.deid import dicom_meta, deidentify, deidentify_folder, merge_manifests
from kneeai.preprocess import preprocess_folder
from kneeai.train import train_mrnet
from kneeai.radiograph_train import train_radiographs
from kneeai.multiview import train_multiview
from kneeai.learner import Predictor
from kneeai.demo import mrnet_demo
from kneeai.interpret import explain, CAM_METHODS
from kneeai.radiographs import RADIOGRAPH_TASKS
from kneeai.sampling import REBALANCE_KINDS
from kneeai.serve import serve
from kneeai.tune import tune
from kneeai.mri import import_mri
from kneeai.active import select_items

# subcommand -> (the fewest arguments it takes, the functions it calls, options that feed no parameter)
COMMANDS = {
    'synth mrnet': (['D'], [synth_mrnet], set()),
    'synth radiographs': (['D'], [synth_radiographs], set()),
    'synth mura': (['D'], [synth_mura], set()),
    'dicom-meta': (['f.dcm'], [dicom_meta], {'out', 'quiet'}),  # the command shows a progress bar unless --quiet
    'deidentify': (['a', 'b'], [deidentify, deidentify_folder], set()),
    'manifest merge': (['D'], [merge_manifests], set()),
    'preprocess': (['a', 'b'], [preprocess_folder], set()),
    'train mrnet': (['--data', 'D', '--out', 'O'], [train_mrnet], {'track', 'launch'}),  # --track wraps the recipe in kneeai.tracking.tracked; --launch re-runs the command in N processes
    'train radiographs': (['--data', 'l.csv', '--out', 'O'], [train_radiographs, train_multiview], {'track', 'study_col', 'launch'}),  # --study-col: train_multiview
    'predict': (['--model', 'M', 'e'], [Predictor.load, Predictor.predict_split], {'model', 'exams', 'data', 'csv', 'side'}),  # --side: predict_images' sides, the same for every file
    'demo': ([], [mrnet_demo], set()),
    'explain': (['--model', 'M', 'e', '--out', 'O'], [explain], set()),
    'serve': (['--model', 'M'], [serve], set()),
    'tune mrnet': (['--data', 'D', '--out', 'O'], [tune, train_mrnet], set()),
    'tune radiographs': (['--data', 'l.csv', '--out', 'O'], [tune, train_radiographs], set()),
    'import-mri': (['a', 'b'], [import_mri], set()),
    'select': (['--model', 'M', '--pool', 'p', '--out', 'o.csv'], [select_items], {'out'}),
}

def leaf(path:str) -> argparse.ArgumentParser:
    "The parser of subcommand `path` ('train mrnet')"
    p = kneeai_parser()
    for name in path.split():
        p = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return p

def options(p): return [a for a in p._actions if a.option_strings and a.dest != 'help']

def test_every_subcommand_is_checked():
    top = next(a for a in kneeai_parser()._actions if isinstance(a, argparse._SubParsersAction))
    leaves = {f'{n} {k}' if any(isinstance(a, argparse._SubParsersAction) for a in p._actions) else n
              for n,p in top.choices.items()
              for k in (next((a.choices for a in p._actions if isinstance(a, argparse._SubParsersAction)), None) or [None])}
    assert leaves - {'version', 'app'} == set(COMMANDS)

@pytest.mark.parametrize('cmd', list(COMMANDS))
def test_defaults_are_the_functions(cmd, monkeypatch):
    monkeypatch.delenv('KNEEAI_SALT', raising=False)
    argv,fs,free = COMMANDS[cmd]
    args = _parse(kneeai_parser(), [*cmd.split(), *argv])
    params = {}
    for f in fs:
        for n,p in inspect.signature(f).parameters.items(): params.setdefault(n, p)
    opts = options(leaf(cmd))
    assert opts
    for a in opts:
        if a.dest in free: continue
        assert a.dest in params, f'{cmd} {a.option_strings}: feeds no parameter of {[f.__qualname__ for f in fs]}'
        default = params[a.dest].default
        if a.required:  # a required option feeds a required parameter
            assert default is inspect.Parameter.empty, f'{cmd} {a.option_strings}: required, but {a.dest} has a default'
            continue
        assert default is not inspect.Parameter.empty, f'{cmd} {a.option_strings}: {a.dest} has no default in the function'
        assert getattr(args, a.dest) == default, f'{cmd} {a.option_strings}: {getattr(args, a.dest)!r} != {default!r}'

def test_train_commands_have_patience_and_mixed_precision():
    for cmd in ('train mrnet', 'train radiographs'):
        flags = {o for a in options(leaf(cmd)) for o in a.option_strings}
        assert {'--patience', '--mixed-precision', '--quiet'} <= flags, cmd
    args = _parse(kneeai_parser(), ['train', 'radiographs', '--data', 'l', '--out', 'O', '--mixed-precision', 'on', '--patience', '3'])
    assert (args.mixed_precision, args.patience) == (True, 3)

def test_choices_are_the_librarys():
    def choices(cmd, dest): return next(a.choices for a in options(leaf(cmd)) if a.dest == dest)
    assert list(choices('train radiographs', 'task')) == list(RADIOGRAPH_TASKS)
    assert tuple(choices('explain', 'method')) == tuple(CAM_METHODS)
    from kneeai.sampling import _SINGLE, _MULTI
    from kneeai.radiograph_train import ORDINAL_LOSSES
    assert set(choices('train radiographs', 'loss')) == {*ORDINAL_LOSSES, *_SINGLE, *_MULTI}
    assert set(choices('train radiographs', 'sampler')) == {*REBALANCE_KINDS, 'none'}

def test_app_options_are_the_apps(monkeypatch):
    "`kneeai app` and the app's own parser take the same options, with one upload limit (`kneeai.cli.MAX_UPLOAD_MB`)"
    import kneeai.cli, kneeai.app
    def opts(p): return {a.dest: (a.option_strings, a.default, a.type, a.help) for a in options(p)}
    assert opts(leaf('app')) == opts(kneeai.app.app_parser())
    assert leaf('app').parse_args([]).max_upload_mb == MAX_UPLOAD_MB
    monkeypatch.setattr(kneeai.cli, 'MAX_UPLOAD_MB', 50)  # one place: both parsers follow it
    assert leaf('app').parse_args([]).max_upload_mb == 50 and kneeai.app.app_parser().parse_args([]).max_upload_mb == 50
