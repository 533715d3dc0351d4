"""`evergreen init NAME` writes a problem folder that runs as written: features, training, gate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evergreen.cli import main as cli
from evergreen.config import load_config

pytestmark = pytest.mark.slow  # real flows end to end on the Prefect engine


def _events(n: int = 12_000, seed: int = 0) -> pd.DataFrame:
    """Synthetic labelled events over 120 days: the label rate depends on the key and the hour."""
    rng = np.random.default_rng(seed)
    time = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.sort(rng.integers(0, 120 * 86400, n)), unit="s")
    key = rng.choice(["a", "b", "c", "d"], n)
    rate = np.select([key == "a", key == "b", key == "c"], [0.1, 0.3, 0.5], 0.7) * (0.6 + 0.8 * (time.hour >= 12))
    return pd.DataFrame(
        {"event_id": np.arange(n), "event_time": time.astype(str), "key": key, "target": rng.random(n) < rate / 1.4}
    ).astype({"target": "int8"})


def test_init_writes_a_problem_that_trains_and_gates(tmp_path, harness, capsys):
    from flows.features import features
    from flows.training import training

    assert cli(["init", "toy_events", "--dir", str(tmp_path)]) == 0
    folder = tmp_path / "toy_events"
    assert "python -m flows.main --config" in capsys.readouterr().out
    _events().to_csv(folder / "data" / "events.csv", index=False)
    config = folder / "config.yaml"
    config.write_text(config.read_text() + f"\nhome: {tmp_path / 'home'}\ntuning: {{n_trials: 3}}\n")
    cfg = load_config(config)
    assert cfg.problem.name == "toy_events" and cfg.feast_repo == folder / "feature_repo"

    built = features(config=str(config))
    assert built["views"] == ["key_stats"] and built["rows"]["key_stats"] > 100
    out = training(config=str(config), as_of="2024-04-25")
    assert out["gate"] == "pass" and out["version"] == "1"  # cold start over the floors
    assert out["holdout"]["roc_auc"] > 0.6  # the key and the hour carry the signal


def test_init_refuses_a_bad_name_and_an_existing_folder(tmp_path, capsys):
    assert cli(["init", "Bad-Name", "--dir", str(tmp_path)]) == 2
    assert "lower case letters" in capsys.readouterr().err
    assert cli(["init", "ok_name", "--dir", str(tmp_path)]) == 0
    assert cli(["init", "ok_name", "--dir", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
