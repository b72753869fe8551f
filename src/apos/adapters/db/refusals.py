"""Rows the database refuses: tell them from an outage, isolate them, make text storable.

A batched writer (decision log, events, audit, snapshots) must not let one row the database
refuses block every other row behind it. Two kinds of failure look alike from the writer:

* the database is down or busy (a lost connection, a timeout, SQLite's "database is
  locked"): every row is fine, so the batch is kept and retried as it is;
* the database refuses a row's content (PostgreSQL: U+0000 in text or JSON, a string over
  its column's length, an integer out of range; either backend: text that is not valid
  UTF-8): retrying changes nothing.

:func:`is_row_fault` tells them apart; :func:`write_isolating` writes a batch and, on a row
fault, bisects it until the refused rows are alone, so the rest are written and the caller
can dead-letter the refused ones with :func:`refusal_reason`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import orjson
import sqlalchemy.exc as sa_exc

from apos.core.iso import redact_card_numbers

__all__ = [
    "dead_letter_raw",
    "is_row_fault",
    "refusal_reason",
    "storable_document",
    "storable_text",
    "write_isolating",
]

_Row = TypeVar("_Row")
_Result = TypeVar("_Result")

# Value errors raised while binding or serialising a row (orjson's JSONEncodeError is a
# TypeError; sqlite3's "Python int too large" an OverflowError; a lone surrogate a
# UnicodeEncodeError, which is a ValueError).
_VALUE_ERRORS = (ValueError, TypeError, OverflowError)


def is_row_fault(exc: BaseException) -> bool:
    """Whether ``exc`` means "the database refuses this content" rather than "retry later".

    Anything not positively a content error (connection loss, timeouts, locks, bugs such as
    a missing table) counts as transient: the rows are kept, never dead-lettered by mistake.
    """
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError):
        return False
    if isinstance(exc, sa_exc.DataError | sa_exc.IntegrityError):
        return True
    if isinstance(exc, sa_exc.StatementError):
        # Raised by SQLAlchemy while binding a parameter (not by the database).
        return not isinstance(exc, sa_exc.DBAPIError) and isinstance(exc.orig, _VALUE_ERRORS)
    return isinstance(exc, _VALUE_ERRORS)


def refusal_reason(exc: BaseException) -> str:
    """Why a row was refused, without echoing its content (it may hold card data)."""
    cause: BaseException = exc
    if isinstance(exc, sa_exc.StatementError) and exc.orig is not None:
        cause = exc.orig
    if isinstance(cause, UnicodeError):
        detail = "text is not valid UTF-8 (a lone surrogate)"
    else:
        # The first line names the problem ("value too long for type character
        # varying(128)"); later lines (DETAIL, CONTEXT, SQLAlchemy's parameters) quote input.
        lines = str(cause).strip().splitlines()
        detail = lines[0][:200] if lines else type(cause).__name__
    return storable_text(
        redact_card_numbers(f"refused by the database: {type(cause).__name__}: {detail}")
    )


def storable_text(value: str) -> str:
    """``value`` with what no database column can hold replaced by U+FFFD (NUL) or ``?``
    (lone surrogates): for text APOS must keep whatever it holds (dead letters, audit)."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


_INT64 = 2**63


def storable_document(value: Any) -> Any:
    """A JSON-like document with every key and string made storable (:func:`storable_text`)
    and integers outside 64 bits written as text."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return value if -_INT64 <= value < _INT64 else str(value)
    if isinstance(value, Mapping):
        return {storable_text(str(k)): storable_document(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable_document(v) for v in value]
    return storable_text(str(value))


def dead_letter_raw(row: Any) -> str:
    """A refused row as text for ``dead_letters.raw``: JSON, storable, card numbers masked."""
    text = orjson.dumps(storable_document(row), default=str).decode()
    return redact_card_numbers(text)


def write_isolating(
    write: Callable[[Sequence[_Row]], _Result], rows: Sequence[_Row]
) -> tuple[list[_Result], list[tuple[_Row, str]]]:
    """Write ``rows`` with ``write`` (one transaction a call); isolate refused rows.

    Returns the results of the successful calls and the refused rows with their reasons.
    A batch that fails with a row fault is split in two and each half written on its own,
    down to single rows: ``k`` bad rows in ``n`` cost about ``2k log2(n)`` extra calls.

    Raises:
        Exception: whatever ``write`` raised that is not a row fault (see
            :func:`is_row_fault`); halves already written stay written, so ``write`` must be
            idempotent (every batched writer of APOS skips rows already stored).
    """
    results: list[_Result] = []
    refused: list[tuple[_Row, str]] = []
    pending: list[Sequence[_Row]] = [rows] if rows else []
    while pending:
        batch = pending.pop()
        try:
            results.append(write(batch))
        except Exception as exc:
            if not is_row_fault(exc):
                raise
            if len(batch) == 1:
                refused.append((batch[0], refusal_reason(exc)))
                continue
            middle = len(batch) // 2
            pending.append(batch[middle:])
            pending.append(batch[:middle])  # popped first: rows keep their order
    return results, refused
