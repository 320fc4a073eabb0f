"""One-line error messages from any exception, empty ones included."""

from __future__ import annotations

from ctr.errors import first_line


class _Wrapped(Exception):
    def __init__(self, orig: BaseException) -> None:
        super().__init__("(driver) wrapper text")
        self.orig = orig


def test_first_line_of_a_message_an_empty_one_and_a_drivers() -> None:
    assert first_line(ValueError("bad thing\nSQL: SELECT 1\n(background on this error …)")) == "bad thing"
    assert first_line(RuntimeError("")) == "RuntimeError"
    assert first_line(RuntimeError("\n  \n")) == "RuntimeError"
    assert first_line(_Wrapped(OSError("connection refused\nIs the server running?"))) == "connection refused"
