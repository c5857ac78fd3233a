"""Logging for every hftd process: standard `logging`, one handler, on stderr.

The supervisor and each agent (forked or a fresh interpreter) are separate processes writing
to the same stderr, which an operator reads as one log. Every record says who wrote it
(`hftd[INSTANCE] AGENT:`, `hftd[INSTANCE]:` for the supervisor); the rest depends on where
stderr goes:

- journald (`hftd run` under systemd): `<4>hftd[prod] producer: ...`. journald stamps the
  time itself and takes the severity from the `<N>` syslog priority that starts each line
  (sd-daemon(3)), so `journalctl -p warning` finds the line; no timestamp of ours.
- anything else (a terminal, a file, a pipe): `2026-11-27 00:41:07.123 WARNING hftd[prod]
  producer: ...`: local time to the millisecond, then the level.

stderr is journald's when $JOURNAL_STREAM ("DEVICE:INODE", set by systemd) names stderr's
own device and inode, as systemd.exec(5) says to check: a `2>file` in the unit's command, or
a shell started from a service, keeps the variable but not the stream, and gets timestamps.

A process that has not called `setup()` (a test driving a stage in-process, a tool that
imports hftd) writes plain `who: message` lines to sys.stderr, as hftd's `print`s did.

The end-of-run summary is not a log record: it is the run's output, on stdout.
"""

from __future__ import annotations

import logging
import os
import sys
import time

ROOT = "hftd"  # every hftd logger is this one, through `get`
LEVELS = ("debug", "info", "warning", "error", "critical")  # `[supervisor] log_level`
# syslog priorities (sd-daemon(3)'s SD_ERR ...); Python has no NOTICE (5)
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}


class Log(logging.LoggerAdapter):
    """A logger whose records say `who` wrote them. Calling it logs at INFO, so what took a
    `log(msg)` callable before (hftd.control.Server, a feed's `log=`) still does."""

    def __call__(self, msg: str) -> None:
        self.info(msg)


def get(who: str) -> Log:
    """The logger of `who` ("hftd[prod] producer", "hftd[prod]", "hftd")."""
    return Log(logging.getLogger(ROOT), {"who": who})


def level_of(name: str | int) -> int:
    """logging's level for `name` (one of LEVELS, any case) or a number."""
    if isinstance(name, int):
        return name
    if name.lower() not in LEVELS:
        raise ValueError(f"log level {name!r} is not one of {', '.join(LEVELS)}")
    return getattr(logging, name.upper())


def priority(levelno: int) -> int:
    """The syslog priority of a record's level (a level between two takes the graver's)."""
    for lvl in sorted(_PRIORITY, reverse=True):
        if levelno >= lvl:
            return _PRIORITY[lvl]
    return 7


def journald(environ=os.environ, fd: int = 2) -> bool:
    """Whether `fd` is the journal stream systemd connected ($JOURNAL_STREAM, DEV:INODE)."""
    dev, sep, ino = environ.get("JOURNAL_STREAM", "").partition(":")
    if not (sep and dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


class Formatter(logging.Formatter):
    """`style`: "journal" (`<N>` on every line), "stamped" (time and level first) or
    "plain" (who and message only)."""

    def __init__(self, style: str):
        super().__init__()
        self.style = style

    def format(self, record: logging.LogRecord) -> str:
        who = getattr(record, "who", ROOT)
        text = f"{who}: {record.getMessage()}" if who else record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if self.style == "journal":
            # every line: journald cuts a record at each newline, and a line without the
            # prefix would be logged at the unit's default priority (info)
            p = f"<{priority(record.levelno)}>"
            return "\n".join(p + line for line in text.split("\n"))
        if self.style == "stamped":
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
            return f"{stamp}.{int(record.msecs):03d} {record.levelname} {text}"
        return text


class StderrHandler(logging.StreamHandler):
    """Writes to sys.stderr as it is when the record is written, not as it was when the
    handler was made (pytest's capsys replaces it; so may a strategy), and flushes each
    record: several processes share the stream, and a line must not wait in a buffer."""

    def __init__(self):
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):  # StreamHandler.__init__ sets it: sys.stderr it stays
        pass


def _install(style: str, level: int) -> None:
    handler = StderrHandler()
    handler.setFormatter(Formatter(style))
    logger = logging.getLogger(ROOT)
    for h in list(logger.handlers):
        logger.removeHandler(h)
    logger.addHandler(handler)
    logger.setLevel(level)
    # not through the root logger: a library that configures it (logging.basicConfig)
    # would otherwise print every line of ours twice
    logger.propagate = False


def setup(level: str | int = "info", environ=os.environ) -> str:
    """Configure this process's logging: what `hftd run` and every agent do first. Returns
    the style chosen ("journal" or "stamped"). Calling it again replaces the handler (a
    forked agent inherits the supervisor's and sets up its own)."""
    style = "journal" if journald(environ) else "stamped"
    _install(style, level_of(level))
    return style


def set_level(level: str | int) -> None:
    logging.getLogger(ROOT).setLevel(level_of(level))


_install("plain", logging.INFO)  # until setup(): see the module's docstring
