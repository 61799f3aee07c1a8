"""Logging for every `run` command: the usual text lines, or one JSON object per line (`--log-format json`)
for log shippers (Loki, Elasticsearch, journald's JSON) that index fields rather than parse text."""

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

# Attributes every LogRecord has; anything else was passed with `extra=` and goes into the JSON object.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (RFC 3339, UTC, milliseconds), level, logger, msg, and any extras;
    an exception's traceback goes in "exc"."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        doc: dict[str, Any] = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup_logging(level: int | str = logging.INFO, fmt: str = "text") -> None:
    """Configure the root logger once for a service process: `fmt` is "text" or "json"; logs go to stderr."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


F = TypeVar("F", bound=Callable[..., Any])


def log_format_option(fn: F) -> F:
    """The `--log-format text|json` option of every `run` command (parameter `log_format`)."""
    option = click.option(
        "--log-format",
        type=click.Choice(FORMATS),
        default="text",
        show_default=True,
        envvar="BTCL2_LOG_FORMAT",
        help="Log lines as text, or one JSON object per line.",
    )
    return option(fn)


def metrics_port_option(fn: F) -> F:
    """The `--metrics-port` option of services without an HTTP API (parameter `metrics_port`)."""
    option = click.option(
        "--metrics-port",
        type=click.IntRange(1, 65535),
        default=None,
        help="Serve Prometheus metrics at http://127.0.0.1:PORT/metrics.",
    )
    return option(fn)
