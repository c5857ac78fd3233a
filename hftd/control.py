"""The control socket: a Unix stream socket in the runtime directory, mode 0600.

One request per connection, msgspec JSON, newline-terminated: ``{"cmd": "pause"}`` ->
``{"ok": true, "detail": "..."}``. Commands: ping, pause (kill switch on: the executor
rejects new orders and strategies send none), resume, stop (drain and exit). Reading
figures does not go through here: `hftd status` maps the stats blocks directly, so it works
even when the supervisor is busy.
"""

from __future__ import annotations

import os
import select
import socket

import msgspec

COMMANDS = ("ping", "pause", "resume", "stop")


class Request(msgspec.Struct, forbid_unknown_fields=True):
    cmd: str


class Reply(msgspec.Struct):
    ok: bool
    detail: str = ""


def socket_path(runtime_dir: str, instance: str) -> str:
    return os.path.join(runtime_dir, f"{instance}.sock")


class Server:
    def __init__(self, path: str, handler):
        self.path = path
        self.handler = handler  # cmd -> Reply
        try:
            os.unlink(path)  # our lock is held: any socket file here is a dead run's
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            s.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        s.listen(8)
        s.setblocking(False)
        self.sock = s

    def poll(self, timeout: float) -> None:
        """Wait up to `timeout` for a request and answer it."""
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return
        with conn:
            conn.settimeout(1.0)
            try:
                data = b""
                while not data.endswith(b"\n") and len(data) < 4096:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                try:
                    req = msgspec.json.decode(data.strip(), type=Request)
                    reply = (self.handler(req.cmd) if req.cmd in COMMANDS else
                             Reply(False, f"unknown command {req.cmd!r}; known: {', '.join(COMMANDS)}"))
                except msgspec.ValidationError as e:
                    reply = Reply(False, f"bad request: {e}")
                except msgspec.DecodeError as e:
                    reply = Reply(False, f"bad request: not JSON ({e})")
                conn.sendall(msgspec.json.encode(reply) + b"\n")
            except OSError:
                pass  # the client went away: nothing to answer

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def request(path: str, cmd: str, timeout: float = 5.0) -> Reply:
    """Send one command; raises ConnectionError when no supervisor listens at `path`."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise ConnectionError(f"no hftd supervisor is listening on {path}") from None
        s.sendall(msgspec.json.encode(Request(cmd)) + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return msgspec.json.decode(data.strip(), type=Reply)
    finally:
        s.close()
