"""`kneeai train --track DIR`: an MLflow run, in an SQLite store in a temporary folder, holding the training's parameters,
the metrics of each epoch, the test report with its intervals and the model folder, read back with MLflow's own client."""
import pytest
mlflow = pytest.importorskip('mlflow')
from conftest import kneeai_cmd
from kneeai.synthetic_radiographs import synth_radiographs
from kneeai.tracking import tracking_uri

def test_train_track_logs_params_epoch_metrics_report_and_model(tmp_path):
    synth_radiographs(tmp_path/'xr', n=32, size=64, seed=0, fracture_rate=.5, progress=False)
    r = kneeai_cmd('train', 'radiographs', '--data', tmp_path/'xr'/'labels.csv', '--out', tmp_path/'out', '--arch', 'small_cnn',
                   '--size', '32', '--epochs', '2', '--bs', '8', '--n-boot', '50', '--no-prep', '--device', 'cpu', '-q',
                   '--track', tmp_path/'runs')
    assert r.returncode == 0, r.stderr
    client = mlflow.MlflowClient(tracking_uri(tmp_path/'runs'))
    runs = client.search_runs([client.get_experiment_by_name('kneeai').experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == 'FINISHED' and run.info.run_name == 'train_radiographs'
    p = run.data.params
    assert (p['arch'], p['size'], p['epochs'], p['bs'], p['task'], p['prep']) == ('small_cnn', '32', '2', '8', 'fracture', 'False')
    for m in ('train_loss', 'valid_loss', 'auc'):
        assert [o.step for o in client.get_metric_history(run.info.run_id, m)] == [0, 1], m
    assert {'test.all.accuracy', 'test.all.accuracy.lo', 'test.all.accuracy.hi'} <= set(run.data.metrics)
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {'report.md', 'report.csv', 'history.csv', 'confusion.png', 'model'} <= arts, arts
    model = {a.path: a.file_size for a in client.list_artifacts(run.info.run_id, 'model')}
    assert set(model) == {'model/config.json', 'model/model.safetensors'} and model['model/model.safetensors'] > 0
    local = client.download_artifacts(run.info.run_id, 'model/config.json', str(tmp_path/'dl'))
    assert (tmp_path/'out'/'model'/'config.json').read_text() == open(local).read()
