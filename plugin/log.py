"""The ``deltainv`` logger: its own stderr handler, every line prefixed with the process id.

Engines configure their own loggers (vLLM's ``vllm`` logger, SGLang's root setup) and may leave
the root logger without a handler, so deltainv attaches one handler to ``logging.getLogger
("deltainv")`` and does not propagate: the lines appear exactly once, in every process.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

logger = logging.getLogger("deltainv")

_once: set[str] = set()
_lock = threading.Lock()
_HANDLER_MARK = "_deltainv_handler"


class _PidFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        record.deltainv_pid = os.getpid()
        return super().format(record)


def configure(level: str = "info") -> None:
    """Attach the stderr handler (once) and set the level."""
    if not any(getattr(h, _HANDLER_MARK, False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_PidFormatter("deltainv[pid=%(deltainv_pid)s] %(levelname)s: %(message)s"))
        setattr(handler, _HANDLER_MARK, True)
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level.upper())


def _first(key: str) -> bool:
    with _lock:
        if key in _once:
            return False
        _once.add(key)
        return True


def warning_once(key: str, message: str) -> bool:
    """Log ``message`` at WARNING the first time ``key`` is seen in this process; return whether it logged."""
    if _first(key):
        logger.warning(message)
        return True
    return False


def info_once(key: str, message: str) -> bool:
    if _first(key):
        logger.info(message)
        return True
    return False


def reset_once() -> None:
    with _lock:
        _once.clear()


__all__ = ["configure", "info_once", "logger", "reset_once", "warning_once"]
