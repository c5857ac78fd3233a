"""Single-key input for `hftd top`: cbreak mode while it runs, restored on exit."""

from __future__ import annotations

import os
import select
import sys
import termios
import time
import tty


class KeyReader:
    def __init__(self, stream=sys.stdin):
        self.stream = stream
        self.fd = stream.fileno() if stream.isatty() else None
        self.saved = None

    def __enter__(self):
        if self.fd is not None:
            self.saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
        return False

    def wait_for(self, key: str, timeout: float) -> bool:
        """Wait up to `timeout` s; True if `key` was pressed."""
        if self.fd is None:
            time.sleep(timeout)
            return False
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready and os.read(self.fd, 1).decode(errors="ignore").lower() == key:
                return True
        return False
