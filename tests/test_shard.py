"""Archive-scale folder jobs in shards (issue 15): `kneeai preprocess --shard I/N` and `kneeai deidentify --shard I/N`, run
as separate processes at the same time into one destination, give together exactly what one unsharded run gives (the same
files, the same bytes, and the merged manifest equal to the unsharded one); every source is in exactly one shard's manifest;
a shard with a failed file exits 1; a rerun of a shard skips everything; a merge with a shard missing fails naming it;
a study split across shards keeps one pseudonymous StudyInstanceUID; `--shard` is checked while the arguments are read.

The shard processes are forked from the test process, which has imported kneeai already: a new interpreter spends about
five seconds importing torch and fastai (see conftest.py), three of them would cost more than the whole test."""
import contextlib, multiprocessing, os
from pathlib import Path
import pandas as pd, pydicom, pytest
import kneeai.cli
from kneeai.deid import shard_of, pseudo_path
from conftest import kneeai_cmd

def _child(argv:list, log:Path):
    "Run `kneeai ARGV` in this (forked) process with its output in `log`, and exit with its status"
    with open(log, 'w') as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        try: rc = kneeai.cli.main(argv) or 0
        except SystemExit as e: rc = e.code if isinstance(e.code, int) else 1
        except BaseException as e: print(f'{type(e).__name__}: {e}'); rc = 99
        f.flush()
    os._exit(rc)

def at_once(tmp:Path, *argvs) -> list:
    "Run each `kneeai ARGV` in a process of its own, all at the same time: [(exit status, output)]"
    ctx = multiprocessing.get_context('fork')
    logs = [tmp/f'run{i}.log' for i in range(len(argvs))]
    ps = [ctx.Process(target=_child, args=([str(a) for a in argv], log)) for argv,log in zip(argvs, logs)]
    for p in ps: p.start()
    for p in ps: p.join(120)
    for p in ps:
        if p.is_alive(): p.kill(); pytest.fail(f'a shard still ran after 120 s: {[log.read_text() for log in logs]}')
    return [(p.exitcode, log.read_text()) for p,log in zip(ps, logs)]

def tree(d:Path) -> dict:
    "Relative path -> bytes of every file under `d`, but the shards' own manifests"
    return {str(p.relative_to(d)): p.read_bytes() for p in d.rglob('*') if p.is_file() and not p.name.startswith('manifest.shard-')}

@pytest.fixture
def src(xr_data, tmp_path) -> Path:
    "The session's 8 synthetic radiographs (in <patient>/<study>/ folders) and a broken file"
    d = tmp_path/'src'
    for f in xr_data[1].file: (d/f).parent.mkdir(parents=True, exist_ok=True); (d/f).write_bytes((xr_data[0]/f).read_bytes())
    (d/'broken.dcm').write_bytes((xr_data[0]/xr_data[1].file[0]).read_bytes()[:2000])
    return d

def test_preprocess_shards_at_once_equal_one_run(src, tmp_path):
    opts = ['--size', '32', '--workers', '0', '--quiet']
    runs = at_once(tmp_path, *[['preprocess', src, tmp_path/'sharded', *opts, '--shard', f'{i}/3'] for i in range(3)])
    bad = shard_of('broken.dcm', 3)
    assert [rc for rc,_ in runs] == [int(i == bad) for i in range(3)], runs           # the shard with the broken file exits 1
    assert 'broken.dcm' in runs[bad][1] and any('every shard done, merged' in out for _,out in runs), runs
    whole = kneeai_cmd('preprocess', src, tmp_path/'whole', *opts)
    assert whole.returncode == 1 and '1 of 9 files failed' in whole.stderr
    assert tree(tmp_path/'sharded') == tree(tmp_path/'whole')                        # images, manifest.csv, settings: the same bytes
    man = pd.read_csv(tmp_path/'whole'/'manifest.csv')
    parts = [pd.read_csv(tmp_path/'sharded'/f'manifest.shard-{i}-of-3.csv') for i in range(3)]
    assert sorted(s for p in parts for s in p.source) == sorted(man.source) and all(len(p) for p in parts)
    assert all(shard_of(s, 3) == i for i,p in enumerate(parts) for s in p.source)
    ok = [i for i in range(3) if i != bad][0]
    again = kneeai_cmd('preprocess', src, tmp_path/'sharded', *opts, '--shard', f'{ok}/3')    # a retried array task
    assert again.returncode == 0 and again.stdout.startswith(f'{len(parts[ok])} skipped; '), again.stdout
    (tmp_path/'sharded'/f'manifest.shard-{bad}-of-3.csv').unlink()
    r = kneeai_cmd('manifest', 'merge', tmp_path/'sharded')
    assert r.returncode == 1 and r.stderr.strip() == (f"kneeai manifest: error: {tmp_path/'sharded'}: 1 of 3 shards not done: {bad}/3 "
                                                      '(run them (a rerun resumes), then merge again)')

def test_deidentify_shards_at_once_equal_one_run(src, xr_data, tmp_path):
    (src/'broken.dcm').unlink()
    key = tmp_path/'key'; key.write_text('the project secret')
    opts = ['--key', key, '--allow-burned-in']                                       # synthetic radiographs burn in the view
    runs = at_once(tmp_path, *[['deidentify', src, tmp_path/'sharded', *opts, '--shard', f'{i}/3'] for i in range(3)])
    assert [rc for rc,_ in runs] == [0, 0, 0], runs
    assert kneeai_cmd('deidentify', src, tmp_path/'whole', *opts).returncode == 0
    assert tree(tmp_path/'sharded') == tree(tmp_path/'whole')                        # the pseudonymous tree and its manifest
    man = pd.read_csv(tmp_path/'whole'/'manifest.csv').set_index('source_id')
    labels = xr_data[1]
    shards = labels.groupby('study_id').file.agg(lambda fs: {shard_of(f, 3) for f in fs})
    split = shards.index[shards.map(len) > 1]
    assert len(split), 'no study of the fixture has images in two shards'
    for study in split:                                                              # one study, several shards, one pseudonym
        fs = labels.file[labels.study_id == study]
        uids = {pydicom.dcmread(tmp_path/'sharded'/man.output[pseudo_path(f, key)]).StudyInstanceUID for f in fs}
        assert len(uids) == 1 and pydicom.dcmread(src/fs.iloc[0]).StudyInstanceUID not in uids
    r = kneeai_cmd('deidentify', src, tmp_path/'sharded', *opts, '--shard', '2/3')
    n = sum(shard_of(f, 3) == 2 for f in labels.file)
    assert r.returncode == 0 and f'0 de-identified copies in {tmp_path/"sharded"}, {n} done before' in r.stdout

def test_shard_is_checked():
    for s,msg in (('3/3', 'I must be from 0 to 2'), ('-1/3', 'I must be from 0 to 2'), ('1/0', 'N must be at least 1'),
                  ('a/b', "'a/b' is not a shard I/N")):
        for cmd in (['preprocess', 's', 'd'], ['deidentify', 's', 'd']):
            r = kneeai_cmd(*cmd, f'--shard={s}')
            assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith(f'kneeai {cmd[0]}: error: argument --shard: '), r.stderr
            assert msg in r.stderr
