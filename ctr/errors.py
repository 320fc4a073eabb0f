"""The one exception family of ``ctr``: messages are written for the user.

The CLI prints ``error: <message>`` on one line to stderr and exits with
``exit_code`` (2: bad usage or input, 1: a failure while doing the work).
"""

from __future__ import annotations


class CtrError(Exception):
    """An expected failure whose message is fit to show to a user."""

    exit_code = 1


class InputError(CtrError):
    """Bad arguments or bad input data: the caller can fix it."""

    exit_code = 2


class DataFormatError(InputError):
    """A file is not in the Criteo layout (raised with ``--on-bad-line fail``)."""


class ArtifactError(CtrError):
    """A saved artifact (transform, model version) is missing or corrupt."""


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (a driver's ``orig`` if it wraps one: drivers append SQL,
    hints and links), or the exception's type name when the message is empty."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
