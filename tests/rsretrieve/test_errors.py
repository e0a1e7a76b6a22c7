"""Tests for rsretrieve/errors.py: what the user is told about an error."""

from rsretrieve.errors import UserError, one_line


def test_user_errors_are_told_as_they_are_and_others_by_type_and_first_line() -> None:
    assert one_line(UserError("index not found: db")) == "index not found: db"
    assert one_line(RuntimeError("  first line\nsecond line")) == "unexpected RuntimeError: first line"
    assert one_line(KeyError()) == "unexpected KeyError: "
