"""The control socket: a Unix stream socket in the runtime directory, mode 0600, that no
client can crash or stall.

One request per connection, msgspec JSON, newline-terminated: ``{"cmd": "pause"}`` ->
``{"ok": true, "detail": "..."}``. Commands: ping, pause (kill switch on: the executor
rejects new orders and strategies send none), resume, stop (drain and exit), reload (apply
what can change live from the config file). Reading figures does not go through here:
`hftd status` maps the stats blocks directly, so it works even when the supervisor is busy.

The server never blocks the supervisor: every socket is non-blocking and served from the
supervisor's loop (`poll`), a request may be at most `MAX_REQUEST` bytes and a connection
lives at most `DEADLINE_S`, at most `MAX_CLIENTS` are open at once (a new one closes the
oldest), and any byte sequence gets an error reply or a close, never an exception. Only the
socket's own user (or root) is answered, checked with SO_PEERCRED on top of the file mode.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time
import msgspec

COMMANDS = ("ping", "pause", "resume", "stop", "reload", "conditions")
MAX_REQUEST = 4096
DEADLINE_S = 1.0
MAX_CLIENTS = 16
PENDING_S = 2.0  # how long a command an agent must complete may keep its connection


# argument values are scalars: a request's shape is then checked as it is read, and nothing
# in it nests (no recursion for a hostile client to exhaust, whatever the interpreter's limit)
Scalar = str | int | float | bool | None


class Request(msgspec.Struct, forbid_unknown_fields=True):
    cmd: str
    args: dict[str, Scalar] = {}


class Reply(msgspec.Struct):
    ok: bool
    detail: str = ""


_decode_request = msgspec.json.Decoder(Request).decode
_encode = msgspec.json.Encoder().encode


def socket_path(runtime_dir: str, instance: str) -> str:
    return os.path.join(runtime_dir, f"{instance}.sock")


def parse(data: bytes) -> Request | Reply:
    """A request, or the error Reply for bytes that are not one (never raises)."""
    try:
        req = _decode_request(data)
    except msgspec.ValidationError as e:
        return Reply(False, f"bad request: {e}")
    except RecursionError:
        return Reply(False, "bad request: nested too deeply")
    except (msgspec.DecodeError, UnicodeDecodeError, ValueError) as e:
        return Reply(False, f"bad request: not JSON ({e})")
    if req.cmd not in COMMANDS:
        return Reply(False, f"unknown command {req.cmd[:40]!r}; known: {', '.join(COMMANDS)}")
    return req


class Pending:
    """A handler's answer that an agent must complete first: `poll()` returns the Reply once
    there is one (else None); a connection's deadline passing sends `late` instead. The
    supervisor's loop never waits for it: the server polls it on each of its passes."""

    __slots__ = ("poll", "late")

    def __init__(self, poll, late: Reply):
        self.poll = poll
        self.late = late


class _Client:
    __slots__ = ("sock", "deadline", "inbox", "outbox", "pending")

    def __init__(self, sock, deadline):
        self.sock = sock
        self.deadline = deadline
        self.inbox = b""
        self.outbox: bytes | None = None  # the reply, once there is one
        self.pending: Pending | None = None


class Server:
    def __init__(self, path: str, handler, log=None):
        self.path = path
        self.handler = handler  # Request -> Reply
        self.log = log or (lambda msg: None)
        self.clients: dict[int, _Client] = {}
        self.served = 0
        self.refused = 0
        try:
            os.unlink(path)  # our lock is held: any socket file here is a dead run's
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            s.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, 0o600, follow_symlinks=False)
        s.listen(socket.SOMAXCONN)
        s.setblocking(False)
        self.sock = s
        self.uid = os.geteuid()

    def poll(self, timeout: float) -> None:
        """Serve for at most `timeout` seconds (returns at once after doing some work)."""
        now = time.monotonic()
        for c in [c for c in self.clients.values() if c.pending is not None]:
            reply = self._poll_pending(c, now)
            if reply is not None:
                c.pending = None
                self._reply(c, reply)
            else:
                timeout = min(timeout, 0.002)  # an agent is about to answer: look again soon
        for c in [c for c in self.clients.values() if c.deadline <= now]:
            self._close(c)  # too slow: no reply
        if self.clients:
            timeout = max(0.0, min(timeout, min(c.deadline for c in self.clients.values()) - now))
        rlist = [self.sock] + [c.sock for c in self.clients.values()
                               if c.outbox is None and c.pending is None]
        wlist = [c.sock for c in self.clients.values() if c.outbox is not None]
        try:
            readable, writable, _ = select.select(rlist, wlist, [], timeout)
        except InterruptedError:
            return
        for s in writable:
            c = self.clients.get(s.fileno())
            if c is not None:
                self._send(c)
        # clients first, then new connections: a request that has arrived is answered before
        # accepting makes room by closing the oldest clients
        for s in readable:
            if s is not self.sock:
                c = self.clients.get(s.fileno())
                if c is not None:
                    self._receive(c)
        if self.sock in readable:
            self._accept()

    def _accept(self) -> None:
        for _ in range(MAX_CLIENTS):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE and the like: try again on the next poll
                self.log(f"control socket: accept failed: {e.strerror}")
                return
            conn.setblocking(False)
            if len(self.clients) >= MAX_CLIENTS:
                self._close(min(self.clients.values(), key=lambda c: c.deadline))
            c = _Client(conn, time.monotonic() + DEADLINE_S)
            self.clients[conn.fileno()] = c
            uid = self._peer_uid(conn)
            if uid not in (self.uid, 0):
                self.refused += 1
                self._reply(c, Reply(False, "permission denied: only the instance's user (or "
                                            "root) may control it"))

    @staticmethod
    def _peer_uid(conn) -> int | None:
        try:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            return struct.unpack("3i", creds)[1]
        except OSError:
            return None

    def _receive(self, c: _Client) -> None:
        try:
            chunk = c.sock.recv(MAX_REQUEST + 1 - len(c.inbox))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(c)
            return
        if chunk:
            c.inbox += chunk
        end = c.inbox.find(b"\n")
        if end >= 0:
            self._answer(c, c.inbox[:end])
        elif len(c.inbox) > MAX_REQUEST:
            self._reply(c, Reply(False, f"bad request: longer than {MAX_REQUEST} bytes"))
        elif not chunk:  # the client closed its side without a newline
            if c.inbox.strip():
                self._answer(c, c.inbox)
            else:
                self._close(c)

    def _answer(self, c: _Client, data: bytes) -> None:
        req = parse(data)
        if isinstance(req, Request):
            try:
                reply = self.handler(req)
            except Exception as e:  # a bug in a handler must not take the daemon down
                self.log(f"control socket: {req.cmd!r} failed: {e!r}")
                reply = Reply(False, f"internal error while handling {req.cmd!r}: {e!r}")
        else:
            reply = req
        self.served += 1
        if isinstance(reply, Pending):
            c.pending = reply
            c.deadline = max(c.deadline, time.monotonic() + PENDING_S)
            return
        self._reply(c, reply)

    def _poll_pending(self, c: _Client, now: float) -> Reply | None:
        try:
            reply = c.pending.poll()
        except Exception as e:
            self.log(f"control socket: a pending reply failed: {e!r}")
            return Reply(False, f"internal error: {e!r}")
        if reply is None and now >= c.deadline - 0.01:
            return c.pending.late
        return reply

    def _reply(self, c: _Client, reply: Reply) -> None:
        c.outbox = _encode(reply) + b"\n"
        self._send(c)

    def _send(self, c: _Client) -> None:
        try:
            n = c.sock.send(c.outbox)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(c)
            return
        c.outbox = c.outbox[n:]
        if not c.outbox:
            self._close(c)

    def _close(self, c: _Client) -> None:
        self.clients.pop(c.sock.fileno(), None)
        try:
            c.sock.close()
        except OSError:
            pass

    def close(self) -> None:
        for c in list(self.clients.values()):
            self._close(c)
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def request(path: str, cmd: str, timeout: float = 5.0, **args) -> Reply:
    """Send one command. Raises ConnectionError when no supervisor listens at `path`,
    PermissionError when the socket is not ours to use, TimeoutError when no reply came."""
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        s.settimeout(timeout)
        try:
            s.connect(path)
            break
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            raise ConnectionError(f"no hftd supervisor is listening on {path}") from None
        except (socket.timeout, BlockingIOError):
            # the queue of connections waiting to be accepted is full (a flood of clients):
            # the supervisor drains it within a poll, so try again until our own deadline
            s.close()
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the supervisor did not accept a connection on {path} "
                                   f"within {timeout:g} s (its queue of connections is full)") \
                    from None
            time.sleep(0.005)
        except BaseException:
            s.close()
            raise
    try:
        data = b""
        try:
            try:
                s.sendall(_encode(Request(cmd, args)) + b"\n")
            except (ConnectionResetError, BrokenPipeError):
                # the server may answer before reading the request (a refused peer): its
                # reply is still there to read
                pass
            while not data.endswith(b"\n"):
                try:
                    chunk = s.recv(4096)
                except ConnectionResetError:  # it closed with our request unread: after its reply
                    break
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            raise TimeoutError(f"no reply from the supervisor on {path} within {timeout:g} s") \
                from None
        if not data:
            raise ConnectionError(f"the supervisor on {path} closed the connection")
        try:
            return msgspec.json.decode(data.strip(), type=Reply)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise ConnectionError(f"the supervisor on {path} gave no reply") from None
    finally:
        s.close()
