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


def test_the_model_description_shows_the_alias_history_as_a_table(store):
    """The machine-readable log stays in tags; the model page's description ends with a markdown
    table rewritten from them on every move, newest first, below the text already there."""
    store.update_registered_model(NAME, description="What this model predicts.")
    registry.promote(store, NAME, "1", "first | cold start", "run-a")
    registry.promote(store, NAME, "2", "better", "run-b")
    registry.rollback(store, NAME, "canary errors", actor="ops")
    text = store.get_registered_model(NAME).description
    above, table = text.split(registry.HISTORY_HEADING)
    assert above.strip() == "What this model predicts."
    assert "Current aliases: `champion` v1." in table
    rows = [line for line in table.splitlines() if line.startswith("| 20")]
    assert len(rows) == len(registry.history(store, NAME)) == 5
    assert rows[0].split(" | ")[1:4] == ["`previous_champion`", "1", "-"]  # newest first: the rollback's last move
    assert "| ops | - | rollback: canary errors |" in rows[0]
    assert rows[-1].endswith("| run-a | first \\| cold start |")  # a pipe in a reason stays in its cell
    assert text.count(registry.HISTORY_HEADING) == 1  # rewritten, not appended


def test_old_homes_with_tags_only_get_the_table_on_the_next_move(store):
    """A log written before the table existed (tags only) is read as is and shown whole."""
    import json

    old = registry.AliasMove("2026-01-01T00:00:00+00:00", "champion", None, "1", "old move", "me", None)
    store.set_registered_model_tag(NAME, f"{registry.LOG_PREFIX}000001", json.dumps(old.__dict__))
    assert registry.history(store, NAME) == [old]
    registry.promote(store, NAME, "2", "new move", None)
    table = store.get_registered_model(NAME).description
    assert "| 2026-01-01T00:00:00 | `champion` | - | 1 | me | - | old move |" in table
    assert [m.reason for m in registry.history(store, NAME)] == ["old move", "new move"]


def test_the_table_keeps_the_latest_moves_within_the_registry_limit():
    moves = [
        registry.AliasMove(
            f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}", "champion", str(i), str(i + 1), "r" * 80, "me", "x"
        )
        for i in range(200)
    ]
    text = registry.history_markdown(moves, {"champion": "200"})
    assert len(text) <= registry.MAX_DESCRIPTION
    rows = [line for line in text.splitlines() if line.startswith("| 2026")]
    assert 10 < len(rows) < 200 and rows[0].startswith("| 2026-01-01T00:03:19 |")  # the newest kept
