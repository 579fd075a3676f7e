"""Logging of ``gateway serve``: one JSON object per line on stdout, INFO and up.

structlog's default console renderer (colours, padding, pretty exceptions) costs a good
part of a millisecond per line on a loaded machine; the request path logs one line per
request, so the server renders JSON instead (also what log collectors want).
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure(level: int = logging.INFO) -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=True,
    )
