from pathlib import Path

import pytest

from evergreen.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
FLIGHTS = ROOT / "examples" / "flights" / "config.yaml"


def _config(tmp_path: Path, body: str, name: str = "c.yaml") -> Path:
    """A config that starts from the flights example, as a user's own file would."""
    p = tmp_path / name
    p.write_text(f"extends: {FLIGHTS}\n{body}")
    return p


def test_default_config_resolves_paths_against_its_folder(monkeypatch):
    monkeypatch.delenv("EVERGREEN_HOME", raising=False)
    cfg = load_config(ROOT / "configs" / "default.yaml")
    assert cfg.home == ROOT / ".evergreen"
    assert cfg.problem.module == ROOT / "examples" / "flights" / "problem.py"
    assert cfg.feast_repo == ROOT / "examples" / "flights" / "feature_repo"
    assert cfg.suites_dir == ROOT / "examples" / "flights" / "expectations"
    assert cfg.features_dir == str(ROOT / ".evergreen" / "feast" / "flights" / "features")
    assert cfg.tracking_uri == f"sqlite:///{ROOT / '.evergreen' / 'mlflow.db'}"
    assert len(cfg.digest) == 16


def test_extends_merges_sections_key_by_key_and_resolves_each_files_paths(tmp_path):
    p = _config(tmp_path, "home: state\ngate:\n  slices: [origin]\ntuning:\n  n_trials: 7\n")
    cfg = load_config(p)
    base = load_config(FLIGHTS)
    assert cfg.home == tmp_path / "state"  # this file's path, against this file's folder
    assert cfg.problem.module == base.problem.module  # the extended file's path, against its folder
    assert cfg.gate.slices == ["origin"] and cfg.gate.floors == base.gate.floors  # a list replaces, a map merges
    assert cfg.tuning.n_trials == 7 and cfg.tuning.seed == base.tuning.seed
    assert cfg.digest != base.digest


def test_extends_loop_and_missing_parent_are_named(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"nowhere\.yaml: config file not found"):
        load_config(tmp_path / "c.yaml")


def test_a_config_without_a_problem_lists_what_is_missing(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("home: state\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    for field in ("data", "problem", "features", "registry"):
        assert f"  {field}: Field required" in str(e.value)


def test_problem_spec_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"problem\.time_zone: .*unknown time zone 'Mars/Olympus'"):
        load_config(_config(tmp_path, "problem:\n  time_zone: Mars/Olympus\n"))
    with pytest.raises(ConfigError, match=r"problem\.request must hold the entity id 'leg_id'"):
        load_config(_config(tmp_path, "problem:\n  entity_id: leg_id\n"))
    with pytest.raises(ConfigError, match=r"problem\.tables\.flights\.columns"):
        load_config(_config(tmp_path, "problem:\n  tables:\n    flights: {columns: []}\n"))
    with pytest.raises(ConfigError, match=r"problem\.request\.carrier\.type"):
        load_config(_config(tmp_path, "problem:\n  request: {flight_id: {type: string}, carrier: {type: text}}\n"))


def test_problem_module_and_params_errors_name_file_and_field(tmp_path):
    from evergreen.problem import load_problem

    cfg = load_config(_config(tmp_path, "problem:\n  params: {lead_time_hours: -1, colour: red}\n"))
    with pytest.raises(ConfigError) as e:
        load_problem(cfg)
    assert "c.yaml" in str(e.value) and "problem.params.lead_time_hours" in str(e.value)
    assert "problem.params.colour" in str(e.value)
    (tmp_path / "empty.py").write_text("X = 1\n")
    cfg = load_config(_config(tmp_path, "problem:\n  module: empty.py\n", "d.yaml"))
    with pytest.raises(ConfigError, match=r"empty\.py: expected exactly one subclass of evergreen\.problem\.Problem"):
        load_problem(cfg)
    cfg = load_config(_config(tmp_path, "problem:\n  module: missing.py\n", "e.yaml"))
    with pytest.raises(ConfigError, match=r"missing\.py: file not found; `evergreen init NAME`"):
        load_problem(cfg)


def test_env_vars_expand_with_defaults(tmp_path, monkeypatch):
    p = _config(tmp_path, "home: ${EG_TEST_HOME:-state}\nwindow:\n  train_days: ${EG_TEST_DAYS}\n")
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
    p = _config(tmp_path, "gate:\n  min_improvment: 0.01\n", "bad.yaml")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "bad.yaml" in str(e.value) and "gate.min_improvment" in str(e.value)


def test_wrong_type_names_field(tmp_path):
    p = _config(tmp_path, "tuning:\n  n_trials: many\n", "bad.yaml")
    with pytest.raises(ConfigError, match=r"tuning\.n_trials"):
        load_config(p)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
