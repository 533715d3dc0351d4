from pathlib import Path

import pytest

from evergreen.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def test_default_config_resolves_paths_against_its_folder(monkeypatch):
    monkeypatch.delenv("EVERGREEN_HOME", raising=False)
    cfg = load_config(ROOT / "configs" / "default.yaml")
    assert cfg.home == ROOT / ".evergreen"
    assert cfg.features.feast_repo == ROOT / "feature_repo"
    assert cfg.tracking_uri == f"sqlite:///{ROOT / '.evergreen' / 'mlflow.db'}"
    assert len(cfg.digest) == 16


def test_env_vars_expand_with_defaults(tmp_path, monkeypatch):
    p = tmp_path / "c.yaml"
    p.write_text("home: ${EG_TEST_HOME:-state}\nwindow:\n  train_days: ${EG_TEST_DAYS}\n")
    monkeypatch.setenv("EG_TEST_DAYS", "30")
    cfg = load_config(p)
    assert cfg.home == tmp_path / "state"
    assert cfg.window.train_days == 30


def test_unset_env_var_without_default_names_file_and_variable(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("home: ${EG_SURELY_UNSET_VAR}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*EG_SURELY_UNSET_VAR"):
        load_config(p)


def test_unknown_field_is_rejected_with_file_and_field(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("gate:\n  min_improvment: 0.01\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "bad.yaml" in str(e.value) and "gate.min_improvment" in str(e.value)


def test_wrong_type_names_field(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("tuning:\n  n_trials: many\n")
    with pytest.raises(ConfigError, match=r"tuning\.n_trials"):
        load_config(p)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
