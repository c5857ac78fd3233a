"""sd_notify without libsystemd: one datagram to $NOTIFY_SOCKET per message.

READY=1 once every agent is up, STATUS=... lines, WATCHDOG=1 only while every agent is
healthy (at half of $WATCHDOG_USEC), STOPPING=1 on shutdown. Does nothing outside systemd.
"""

from __future__ import annotations

import os
import socket


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
