"""Structured JSON logs, one event per line, with secrets and card data masked.

Every record passes through :func:`mask_sensitive`, which rewrites card numbers (Luhn-valid
13-19 digit runs), e-mail addresses, bearer and basic credentials, passwords in connection
URLs, ``secret=...``-style pairs and APOS API keys wherever they appear,
and blanks values of keys that name secrets (``password``, ``secret``, ``api_key``, ...).
The request id of the current HTTP request is bound through ``structlog.contextvars``.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

from apos.core.iso import redact_card_numbers

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
_API_KEY = re.compile(r"apos_key_[0-9a-f]+_[A-Za-z0-9_\-]+")
_BEARER = re.compile(r"(?i)\b((?:bearer|basic)\s+)[A-Za-z0-9._~+/=\-]+")
# key=value / key: value / "key": "value" of a secret-named key inside free text. The value
# is a quoted string (escapes included) or a bare token ending before JSON punctuation.
_SECRET_PAIR = re.compile(
    r"(?i)\b((?:client_)?secret|pass(?:word|wd)?|pwd|api[_-]?key|access[_-]?key|hash_key|token)"
    r"(\"?\s*[:=]\s*)(\"(?:[^\"\\]|\\.)*\"|[^\s\"',;&}\]]+)"
)


# The password of a connection URL (postgresql://app:pw@db/..., redis://:pw@cache:6379).
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@]*:)[^\s@/]+@")
_SECRET_KEYS = re.compile(
    r"(?i)(pass(word)?|secret|api[_-]?key|token|authorization|hash_key|card_number|cvc|cvv)"
)


def _blank_secret(match: re.Match[str]) -> str:
    key, sep, value = match.groups()
    if value == "null":  # nothing to hide, and JSON must stay JSON
        return match.group(0)
    quoted = value.startswith('"') or sep.startswith('"')
    return key + sep + ('"[redacted]"' if quoted else "[redacted]")


def mask_secret_pairs(text: str) -> str:
    """Blank the value of every ``secret=...``-style pair (also JSON ``"secret": "..."``).

    >>> mask_secret_pairs('{"client_secret": "pay_1_secret_x", "amount": 1999}')
    '{"client_secret": "[redacted]", "amount": 1999}'
    """
    return _SECRET_PAIR.sub(_blank_secret, text)


def mask_text(text: str) -> str:
    """Mask card numbers, e-mails, API keys, bearer tokens and URL passwords in free text.

    >>> mask_text("card 4242 4242 4242 4242 for ann@example.com")
    'card [card ****4242] for [email]'
    >>> mask_text("connecting to postgresql://app:s3cret@db.internal/apos")
    'connecting to postgresql://app:[redacted]@db.internal/apos'
    >>> mask_text('login password=hunter2 then {"client_secret": "cs_123"}')
    'login password=[redacted] then {"client_secret": "[redacted]"}'
    """
    text = redact_card_numbers(text)
    # Before e-mails: "pw@db.internal" would otherwise be masked as an address, half-way.
    text = _URL_PASSWORD.sub(r"\1[redacted]@", text)
    text = _EMAIL.sub("[email]", text)
    text = _API_KEY.sub("[api key]", text)
    text = mask_secret_pairs(text)
    return _BEARER.sub(r"\1[token]", text)


def _mask_value(key: str, value: Any) -> Any:
    if _SECRET_KEYS.search(key):
        return "[redacted]" if value not in (None, "") else value
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {k: _mask_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_value(key, v) for v in value]
    return value


def add_component(
    logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: records from stdlib loggers get their logger name as component."""
    if "component" not in event_dict:
        name = getattr(logger, "name", None) or event_dict.get("_record", None)
        if isinstance(name, str):
            event_dict["component"] = name
        elif name is not None and hasattr(name, "name"):
            event_dict["component"] = name.name
    return event_dict


def mask_sensitive(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask every field of the record (see module docstring)."""
    for key in list(event_dict):
        event_dict[key] = _mask_value(key, event_dict[key])
    return event_dict


def configure_logging(level: str = "info", json: bool = True, stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging (uvicorn, alembic) through one masked pipeline."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        structlog.processors.format_exc_info,
        add_component,
        mask_sensitive,
    ]
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Access logs are per request: too chatty at thousands of decisions a second; alembic
    # narrates every plugin it loads at info.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def get_logger(component: str) -> structlog.stdlib.BoundLogger:
    """A logger whose every record carries ``component``."""
    return structlog.get_logger(component).bind(component=component)  # type: ignore[no-any-return]
