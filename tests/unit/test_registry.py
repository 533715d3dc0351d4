"""Alias moves, history and rollback on a real MLflow SQLite store in a temp folder."""

import pytest
from mlflow.exceptions import MlflowException

from evergreen import registry

NAME = "test-model"


@pytest.fixture
def store(tmp_path):
    c = registry.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    registry.ensure_model(c, NAME)
    for i in range(3):
        (tmp_path / f"m{i}").mkdir()
        c.create_model_version(NAME, source=str(tmp_path / f"m{i}"))
    return c


def test_promote_keeps_previous_champion_and_records_each_move(store):
    assert registry.promote(store, NAME, "1", "first", "run-a") is None
    assert registry.promote(store, NAME, "2", "better", "run-b") == "1"
    assert registry.aliases(store, NAME) == {"champion": "2", "previous_champion": "1"}
    moves = [(m.alias, m.from_version, m.to_version, m.flow_run) for m in registry.history(store, NAME)]
    assert moves == [
        ("champion", None, "1", "run-a"),
        ("previous_champion", None, "1", "run-b"),
        ("champion", "1", "2", "run-b"),
    ]
    assert all(m.at and m.actor and m.reason for m in registry.history(store, NAME))


def test_rollback_walks_back_through_history(store):
    for v in ("1", "2", "3"):
        registry.promote(store, NAME, v, f"promote {v}", None)
    assert registry.rollback(store, NAME, "bad canary") == ("3", "2")
    assert registry.aliases(store, NAME) == {"champion": "2", "previous_champion": "1"}
    assert store.get_model_version(NAME, "3").tags["evergreen.rolled_back"]
    assert registry.rollback(store, NAME, "still bad") == ("2", "1")
    assert registry.aliases(store, NAME) == {"champion": "1"}
    with pytest.raises(registry.RegistryError, match="previous_champion"):
        registry.rollback(store, NAME, "nothing left")
    last = registry.history(store, NAME)[-1]
    assert last.reason == "rollback: still bad" and last.alias == "previous_champion" and last.to_version is None


def test_rollback_without_champion_is_a_clear_error(store):
    with pytest.raises(registry.RegistryError, match="no champion"):
        registry.rollback(store, NAME, "x")


def test_failed_multi_alias_move_restores_every_alias(store):
    registry.promote(store, NAME, "1", "first", None)
    before, log_before = registry.aliases(store, NAME), len(registry.history(store, NAME))
    # A real failure half-way: the second move points at a version that does not exist.
    with pytest.raises(MlflowException):
        registry.move_aliases(store, NAME, [("previous_champion", "1"), ("champion", "99")], "broken", None)
    assert registry.aliases(store, NAME) == before
    # the first move was logged before the failure; the log says what happened, aliases are intact
    assert len(registry.history(store, NAME)) == log_before + 1
