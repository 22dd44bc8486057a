"""`[planner] review_deadline_s` in the data dir's orrery.toml: its default, a value read
from the file, and a clear refusal of what is not a positive number of seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import ConfigError, PlannerSettings, load_planner_settings


def configured(tmp_path: Path, value: str) -> PlannerSettings:
    (tmp_path / "orrery.toml").write_text(f"[planner]\nreview_deadline_s = {value}\n")
    return load_planner_settings(tmp_path)


def test_the_review_deadline_is_ten_seconds_unless_configured(tmp_path: Path) -> None:
    assert load_planner_settings(tmp_path).review_deadline_s == 10.0  # no file
    assert configured(tmp_path, "2.5").review_deadline_s == 2.5
    assert configured(tmp_path, "30").review_deadline_s == 30.0


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("0", "must be a positive number of seconds"),
        ("-3", "must be a positive number of seconds"),
        ("true", "give a number of seconds, such as 10, not true or false"),
        ('"soon"', "valid number"),
        ("inf", "finite number"),
    ],
)
def test_a_review_deadline_that_is_not_positive_seconds_is_refused_clearly(
    tmp_path: Path, value: str, says: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        configured(tmp_path, value)
    message = str(refused.value)
    assert message.startswith(f"{tmp_path / 'orrery.toml'}: planner.review_deadline_s: ")
    assert says in message
    assert "Value error" not in message
