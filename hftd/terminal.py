"""The terminal of `hftd top`: single-key input (cbreak mode while it runs, restored on exit)
and a screen redrawn in place.

No flicker without curses: clearing the screen and then writing the frame shows a blank
screen between the two; instead each frame goes out in one write that moves the cursor home,
overwrites every line, clears what is left of each (ESC [K) and then everything below the
frame (ESC [J), so no cell is ever blank that is not blank in the frame. Frames are fitted
to the terminal: a line wider than it is wrapped at spaces (nothing is cut off), and rows
past its height are left out with a last line saying how many (so the frame never scrolls
the screen, which would break drawing from the top). Output that is not a terminal
(a pipe, a file) gets every frame in full, one after another, without escape sequences.
"""

from __future__ import annotations

import io
import os
import select
import shutil
import sys
import termios
import time
import tty
import unicodedata

HOME, CLEAR_EOL, CLEAR_EOS = "\x1b[H", "\x1b[K", "\x1b[J"
CLEAR_SCREEN, HIDE_CURSOR, SHOW_CURSOR = "\x1b[2J", "\x1b[?25l", "\x1b[?25h"


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
            try:
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
            except termios.error:  # the terminal hung up (SIGHUP): nothing to give back
                pass
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


def columns(s: str) -> int:
    """Terminal columns `s` takes: East Asian wide characters (a TAIFEX file's 成交價格) two."""
    if s.isascii():
        return len(s)
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else
               0 if unicodedata.combining(c) else 1 for c in s)


def _cut(word: str, width: int) -> tuple[str, str]:
    """The longest head of `word` that fits `width` columns (at least one character), and
    the rest."""
    n, used = 0, 0
    for c in word:
        w = columns(c)
        if used + w > width and n:
            break
        used += w
        n += 1
    return word[:n], word[n:]


def wrap(line: str, width: int) -> list[str]:
    """`line` as lines of at most `width` columns: broken at spaces (a word wider than the
    width is broken inside), continuation lines indented 4 more than the line's own indent
    so they read as one item. Every character but the spaces at the breaks is kept."""
    if columns(line) <= width:
        return [line]
    body = line.lstrip(" ")
    own = line[:len(line) - len(body)]
    indent = " " * min(len(own) + 4, width // 2)
    out: list[str] = []
    cur = own[:width // 2]
    for word in body.split(" "):
        lead = cur + " " if cur.strip() else cur
        if columns(lead + word) <= width:
            cur = lead + word
            continue
        if cur.strip():
            out.append(cur.rstrip(" "))
            cur = indent
            if not word:  # one of several spaces, at the break
                continue
        while columns(cur + word) > width:  # a word longer than a whole line
            head, word = _cut(word, width - columns(cur))
            out.append(cur + head)
            cur = indent
        cur += word
    if cur.strip():
        out.append(cur.rstrip(" "))
    return out


def size() -> tuple[int, int]:
    """(columns, rows): $COLUMNS and $LINES if set, else the terminal's, else 80 x 24."""
    cols, rows = shutil.get_terminal_size((80, 24))
    return max(cols, 20), max(rows, 3)


def fit(lines: list[str], width: int) -> list[str]:
    return [piece for line in lines for piece in wrap(line, width)]


class Screen:
    """Where top draws (see the module docstring): `draw(lines, footer)` shows one frame."""

    def __init__(self, stream=sys.stdout):
        self.stream = stream
        try:
            self.fd = stream.fileno()
        except (AttributeError, io.UnsupportedOperation):  # e.g. click's test runner
            self.fd = None
        self.tty = self.fd is not None and stream.isatty() and os.environ.get("TERM") != "dumb"
        self.frames = 0

    def __enter__(self):
        if self.tty:
            self._write(HIDE_CURSOR + HOME + CLEAR_SCREEN)
        return self

    def __exit__(self, *exc):
        if self.tty:
            try:
                self._write(SHOW_CURSOR + "\n")
            except OSError:  # the terminal hung up (SIGHUP): nothing to give back
                pass
        return False

    def draw(self, lines: list[str], footer: str = "") -> None:
        width, height = size()
        if not self.tty:
            self._write(("\n" if self.frames else "") + "\n".join(fit(lines, width)) + "\n")
            self.frames += 1
            return
        # one column spare: a line that fills the last column leaves the cursor on it, and
        # the clear that follows would erase its last character
        width -= 1
        lines = fit(lines, width)
        tail = fit([footer], width)[:1] if footer else []
        room = height - len(tail)
        if len(lines) > room:
            more = len(lines) - room + 1
            lines = lines[:room - 1] + fit([f"... {more} more lines (a taller window shows "
                                            f"them; hftd status prints all)"], width)[:1]
        lines += tail
        self._write(HOME + (CLEAR_EOL + "\n").join(lines) + CLEAR_EOL + CLEAR_EOS)
        self.frames += 1

    def _write(self, text: str) -> None:
        """One write(2) per frame (the rest, if the terminal took only part)."""
        self.stream.flush()
        if self.fd is None:
            self.stream.write(text)
            self.stream.flush()
            return
        data = text.encode(getattr(self.stream, "encoding", None) or "utf-8", errors="replace")
        while data:
            data = data[os.write(self.fd, data):]
