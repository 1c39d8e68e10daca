"""The MLflow store: created whole, and safely when several processes reach it at once."""

import subprocess
import sys
import time

from mlflow.tracking import MlflowClient

from synthaug.core.tracking import ensure_experiment

CREATE_AT_ONCE = '''
import sys, time
from pathlib import Path
go = Path(sys.argv[2])
Path(sys.argv[3]).touch()               # imported, waiting for the signal
while not go.exists():
    time.sleep(0.01)
from synthaug.core.tracking import ensure_experiment
print(ensure_experiment(sys.argv[1], "race"))
'''


def test_processes_creating_one_store_at_once_share_one_experiment(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{i}" for i in range(4)]
    procs = [subprocess.Popen([sys.executable, "-c", "import mlflow.tracking, synthaug.core.tracking\n" + CREATE_AT_ONCE,
                               uri, str(go), str(r)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in ready]
    while not all(r.exists() for r in ready):   # every process has imported MLflow and waits for the signal
        assert all(p.poll() is None for p in procs), [p.communicate()[1][-2000:] for p in procs if p.poll()]
        time.sleep(0.05)
    go.touch()
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-2000:] for _, err in results]
    assert len({out.strip() for out, _ in results}) == 1
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["mlflow.db"]   # no private files left


def test_a_new_store_opens_complete_in_another_client(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = ensure_experiment(uri, "whole")
    assert ensure_experiment(uri, "whole") == experiment_id
    experiment = MlflowClient(uri).get_experiment(experiment_id)
    assert experiment.artifact_location == (tmp_path / "mlartifacts" / "whole").as_uri()


def test_no_credential_or_home_path_is_logged_as_a_param(tmp_path):
    from pathlib import Path

    from synthaug.core.tracking import RunLogger, ensure_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = RunLogger.create(uri, ensure_experiment(uri, "params"), "r", {})
    run.log_params({"data": str(Path.home() / "data" / "cifar.tar.gz"), "store": "postgresql://bob:s3cret@db/mlflow",
                    "plain": "/tmp/x"})
    params = run.client.get_run(run.run_id).data.params
    assert params == {"data": "~/data/cifar.tar.gz", "store": "postgresql://***@db/mlflow", "plain": "/tmp/x"}
