"""``rsretrieve app``'s arguments: bad combinations are one ``error:`` line before Streamlit starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import assert_one_line_error, run_cli


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--server", "ftp://example.org"], "--server must be an http:// or https:// URL"),
        (["--db", "x.lance", "--server", "http://127.0.0.1:8000"], "either --db (and --checkpoint) or --server"),
        (["--db", "x.lance", "--index", "naip"], "apply to --server only"),
        (["--server", "http://127.0.0.1:8000", "--api-key-file", "no-such-key.txt"], "API key file not found"),
    ],
)
def test_bad_app_arguments_are_one_error_line(args: list[str], fragment: str, tmp_path: Path) -> None:
    assert_one_line_error(run_cli("app", *args, "--port", "1", timeout=60), fragment)
