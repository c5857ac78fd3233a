"""sd_notify without libsystemd: one datagram to $NOTIFY_SOCKET per message.

READY=1 once every agent is up, STATUS=... lines, WATCHDOG=1 only while every agent is
healthy (at half of $WATCHDOG_USEC), STOPPING=1 on shutdown, then EXTEND_TIMEOUT_USEC= while
the drain goes on. Does nothing outside systemd.
"""

from __future__ import annotations

import os
import socket

# systemd's variables for the service's main process alone: the supervisor's agents and fork
# server must not inherit them. An agent that sent on NOTIFY_SOCKET would be ignored and
# logged by systemd (NotifyAccess=main), or, with a looser setting, could say READY or feed
# the watchdog for an instance that is not healthy; the LISTEN_* ones hand over descriptors
# meant for the process whose pid LISTEN_PID names.
PRIVATE_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID",
               "LISTEN_FDNAMES")


class Notifier:
    def __init__(self, environ=os.environ):
        addr = environ.get("NOTIFY_SOCKET", "")
        if addr.startswith("@"):
            addr = "\0" + addr[1:]  # abstract namespace
        self.addr = addr or None
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        ours = not pid or pid == str(os.getpid())
        self.watchdog_interval_s = int(usec) / 2e6 if usec.isdigit() and ours else None
        self._sock = None

    @property
    def enabled(self) -> bool:
        return self.addr is not None

    def notify(self, *lines: str) -> None:
        if self.addr is None:
            return
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.sendto("\n".join(lines).encode(), self.addr)
        except OSError:
            pass  # systemd gone or socket full: never take the daemon down for this

    def ready(self, status: str = "") -> None:
        self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def extend_timeout(self, seconds: float) -> None:
        """Ask systemd for `seconds` more before it gives up on the current state (the stop:
        TimeoutStopSec= is a floor, a drain may take longer), counted from now."""
        self.notify(f"EXTEND_TIMEOUT_USEC={max(1, round(seconds * 1e6))}")
