"""Agents forked from a process that has already imported everything, so they share its pages.

A fresh interpreter per agent (`python -m hftd agent ...`) costs each agent ~20 MiB of pages
of its own: the same modules, imported again. Instead the supervisor, once it has imported
what agents run (and before it starts any thread: forking a process with threads is unsafe),
freezes its objects out of the garbage collector's reach (`gc.freeze()`: a collection would
otherwise write to every object and un-share its page) and forks a *fork server*. The fork
server does nothing but fork agents on request, so its pages stay as they were, shared with
every agent it forks; an agent copies only the pages it writes to.

Each agent must still be the supervisor's own child (it waits for it, its lifeline is the
supervisor's death, tests and `bench/chaos.py` find agents among its children): the
supervisor makes itself a child subreaper (PR_SET_CHILD_SUBREAPER) and the fork server
double-forks, so the agent is reparented to the supervisor when the intermediate process
exits, before the fork server answers with its pid. The agent then does what
`hftd.lifeline` does for an exec'd one (PR_SET_PDEATHSIG, then checks its parent is the
supervisor), takes its own process group, keeps only the descriptors an exec'd agent had
(stdio and the instance lock), writes its command line over the argv area it inherited
(`hftd agent ROLE [--name N] --instance I ...`, as far as it fits) and runs
`hftd.agent.main`, leaving with `os._exit`: it never returns into the supervisor's frames.

The supervisor falls back to starting agents as new interpreters (`hftd agent`) when it
cannot fork safely (another thread already runs: e.g. OPENBLAS_NUM_THREADS > 1, or a
strategy module started one when it was imported), and from the first moment the fork
server fails (killed, hung).
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import os
import signal
import socket
import subprocess
import sys
import time
import traceback

import msgspec

from .systemd import PRIVATE_ENV

PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36
REQUEST_TIMEOUT_S = 2.0  # the supervisor's wait for the fork server's answer (a fork takes ~1 ms)
REPARENT_TIMEOUT_S = 5.0  # an agent's wait to become the supervisor's child
ORPHANED = 70  # exit status of an agent whose supervisor died while it was starting


class ForkServerError(RuntimeError):
    pass


def threads() -> int:
    """Threads of this process (the kernel's count: C threads such as OpenBLAS's too)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def set_comm(name: str) -> None:
    """The process name `ps -e`, `top` and `pgrep` show (15 bytes at most)."""
    try:
        _libc().prctl(PR_SET_NAME, ctypes.c_char_p(os.fsencode(name)[:15]), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _argv_area() -> tuple[int, int] | None:
    """(address, length) of this process's argv strings, as /proc/PID/cmdline reads them."""
    try:
        with open("/proc/self/stat", "rb") as f:
            data = f.read()
        fields = data[data.rindex(b")") + 2:].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (stat fields 48, 49)
    except (OSError, ValueError, IndexError):
        return None
    return (start, end - start) if 0 < start < end else None


def _blank_environ(keys) -> None:
    """Overwrite with NULs the KEY=value strings of `keys` in the environment block this
    process inherited (/proc/PID/environ shows that block; `os.environ.pop` only drops the
    pointers to them), so no reader of /proc sees them in the fork server or its agents."""
    try:
        with open("/proc/self/stat", "rb") as f:
            data = f.read()
        fields = data[data.rindex(b")") + 2:].split()
        start, end = int(fields[47]), int(fields[48])  # env_start, env_end (fields 50, 51)
    except (OSError, ValueError, IndexError):
        return
    if not 0 < start < end:
        return
    block = ctypes.string_at(start, end - start)
    at = 0
    for entry in block.split(b"\0"):
        if entry.split(b"=", 1)[0] in {os.fsencode(k) for k in keys}:
            ctypes.memset(start + at, 0, len(entry))
        at += len(entry) + 1


def set_cmdline(*candidates: list[str]) -> list[str] | None:
    """Write the first of `candidates` that fits over the inherited argv area (NUL-separated,
    padded with NULs, so /proc/PID/cmdline and psutil read it as that argv); returns it, or
    None if none fits (the area is then left as it was)."""
    area = _argv_area()
    if area is None:
        return None
    start, room = area
    for argv in candidates:
        blob = b"\0".join(os.fsencode(a) for a in argv) + b"\0"
        if len(blob) <= room:
            ctypes.memmove(start, blob.ljust(room, b"\0"), room)
            return argv
    return None


def agent_argv(role: str, name: str | None, instance: str, runtime_dir: str,
               supervisor_pid: int) -> list[str]:
    """The command line an agent is started with (`hftd agent`)."""
    argv = [sys.executable, "-m", "hftd", "agent", role]
    if role == "strategy":
        argv += ["--name", name]
    return argv + ["--instance", instance, "--runtime-dir", runtime_dir,
                   "--supervisor-pid", str(supervisor_pid)]


def _titles(role: str, name: str | None, instance: str, runtime_dir: str,
            supervisor_pid: int) -> list[list[str]]:
    """What a forked agent's command line says, longest first: every form keeps
    `agent ROLE` (and `--name N`), which is how tests and tools tell agents apart."""
    full = agent_argv(role, name, instance, runtime_dir, supervisor_pid)
    who = ["agent", role] + (["--name", name] if role == "strategy" else [])
    return [full, ["hftd", *who, "--instance", instance], ["hftd", *who], who, ["agent", role]]


def preload(cfg) -> None:
    """Import, in the supervisor, what the agents of `cfg` import when they start, so it is in
    the pages they share, and what the supervisor itself imports later: an import after the
    fork writes new objects into half-used pages all over the heap, copying each (measured:
    2.9 MiB for the exporter's 0.2). Not the PFCF modules: unitrade may start threads."""
    import importlib

    from . import commands, stages  # noqa: F401

    if cfg.metrics.listen:
        from . import exporter  # noqa: F401
    from .stages.strategy import load_strategy_class

    feed = cfg.producer.feed
    if feed in ("synthetic", "taifex", "recording"):
        importlib.import_module(f"hftd.feeds.{feed}")
    if feed == "synthetic":
        importlib.import_module("numpy.random")  # np.random, imported on first use: 5 MiB
    if cfg.executor.venue == "sim":
        importlib.import_module("hftd.venues.sim")
    for s in cfg.strategies:  # `hftd run` has loaded them already (config.check_runnable)
        try:
            load_strategy_class(s.class_)
        except Exception:
            pass  # the agent says why when it starts


class ForkedAgent:
    """An agent the fork server started, as the supervisor's child: the part of
    subprocess.Popen the supervisor uses."""

    def __init__(self, pid: int, args):
        self.pid = pid
        self.args = args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # not ours to wait for (cannot happen: it is our child)
                self.returncode = 1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.0005
        while self.poll() is None:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise subprocess.TimeoutExpired(self.args, timeout)
                delay = min(delay * 2, left, 0.05)
            else:
                delay = min(delay * 2, 0.05)
            time.sleep(delay)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # as Popen: never signal a pid that may have been reused
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """The supervisor's handle on its fork server."""

    def __init__(self, pid: int, sock: socket.socket, instance: str, runtime_dir: str):
        self.pid = pid
        self.sock = sock
        self.instance = instance
        self.runtime_dir = runtime_dir

    @classmethod
    def start(cls, cfg, runtime_dir: str, keep_fd: int) -> "ForkServer":
        """Fork the fork server from this (the supervisor's) process; `keep_fd`, the instance
        lock, goes on to every agent. Raises ForkServerError saying why it cannot."""
        preload(cfg)
        n = threads()
        if n != 1:
            raise ForkServerError(f"the supervisor already runs {n} threads (forking it is "
                                  f"unsafe; OPENBLAS_NUM_THREADS > 1, or a strategy module "
                                  f"that starts a thread?)")
        try:
            if _libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
        except (OSError, AttributeError) as e:
            raise ForkServerError(f"cannot become a child subreaper: {e}") from None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sys.stdout.flush()
        sys.stderr.flush()
        supervisor = os.getpid()
        known = (msgspec.json.encode(cfg), cfg)  # the spec the supervisor will write
        gc.collect()
        gc.freeze()  # from here on no collection writes to these objects (nor un-shares them)
        try:
            _libc().malloc_trim(0)  # free heap pages out of the image every process shares
        except (OSError, AttributeError):
            pass
        pid = os.fork()
        if pid == 0:  # the fork server: never returns
            code = 1
            try:
                ours.close()
                code = _serve(theirs, cfg.instance, runtime_dir, supervisor, keep_fd, known)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        theirs.close()
        ours.settimeout(REQUEST_TIMEOUT_S)
        return cls(pid, ours, cfg.instance, runtime_dir)

    def spawn(self, role: str, name: str | None) -> ForkedAgent:
        """A new agent, already the supervisor's child. Raises ForkServerError if the fork
        server does not answer with one (the caller then starts it another way)."""
        try:
            self.sock.send(f"{role}\0{name or ''}".encode())
            reply = self.sock.recv(64)
        except OSError as e:  # socket.timeout included
            raise ForkServerError(f"fork server (pid {self.pid}): {e}") from None
        try:
            pid = int(reply)
        except ValueError:
            pid = 0
        if pid <= 0:
            raise ForkServerError(f"fork server (pid {self.pid}) answered {reply!r}")
        return ForkedAgent(pid, agent_argv(role, name, self.instance, self.runtime_dir,
                                           os.getpid()))

    def close(self, timeout: float = 2.0) -> None:
        """End the fork server (it leaves when its socket closes) and reap it."""
        self.sock.close()
        proc = ForkedAgent(self.pid, ["fork-server"])
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- in the fork server ---------------------------------------------------------------------

def _reset_signals() -> None:
    """The dispositions a fresh interpreter has (the supervisor's handlers are its own)."""
    for sig in (signal.SIGTERM, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
                signal.SIGALRM, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the terminal's hangup is the supervisor's


def _serve(sock: socket.socket, instance: str, runtime_dir: str, supervisor: int,
           keep_fd: int, known) -> int:
    from .lifeline import follow

    if not follow(supervisor):
        return ORPHANED
    _reset_signals()
    os.setpgid(0, 0)  # a terminal's Ctrl-C is for the supervisor alone
    for key in PRIVATE_ENV:
        os.environ.pop(key, None)  # the notify protocol is the supervisor's alone
    _blank_environ(PRIVATE_ENV)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    atexit._clear()  # the supervisor's exit handlers are not its agents'
    set_comm("hftd-forkserver")
    set_cmdline(["hftd", "fork-server", "--instance", instance, "--supervisor-pid",
                 str(supervisor)], ["hftd", "fork-server", "--instance", instance],
                ["hftd", "fork-server"])
    gc.freeze()  # what the lines above made, too
    while True:
        try:
            msg = sock.recv(4096)
        except OSError:
            return 1
        if not msg:
            return 0  # the supervisor closed its end (or died)
        role, _, name = msg.decode().partition("\0")
        r, w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        mid = os.fork()
        if mid == 0:  # the intermediate: forks the agent and leaves at once
            try:
                me = os.getpid()
                pid = os.fork()
                if pid == 0:
                    os.close(r)
                    os.close(w)
                    _agent(role, name or None, instance, runtime_dir, supervisor, keep_fd,
                           sock.fileno(), me, known)
                os.write(w, str(pid).encode())
            finally:
                os._exit(0)
        os.close(w)
        answer = b""
        while chunk := os.read(r, 32):
            answer += chunk
        os.close(r)
        os.waitpid(mid, 0)  # once it is reaped, the agent is the supervisor's child
        try:
            sock.send(answer or b"0")
        except OSError:
            return 1


def _agent(role: str, name: str | None, instance: str, runtime_dir: str, supervisor: int,
           keep_fd: int, server_fd: int, intermediate: int, known) -> None:
    """The agent process, forked: never returns."""
    code = 1
    try:
        os.close(server_fd)
        deadline = time.monotonic() + REPARENT_TIMEOUT_S
        while os.getppid() == intermediate:  # until it has exited and we are reparented
            if time.monotonic() > deadline:
                os._exit(ORPHANED)
            time.sleep(0.0001)
        from .lifeline import follow

        if not follow(supervisor):  # PR_SET_PDEATHSIG, then our parent must be the supervisor
            os._exit(ORPHANED)
        os.setpgid(0, 0)  # as Popen(process_group=0): a terminal's Ctrl-C is not ours
        _close_fds_but(keep_fd)  # as Popen(pass_fds=(lock,)): stdio and the instance lock
        argv = agent_argv(role, name, instance, runtime_dir, supervisor)
        sys.argv = [sys.argv[0], *argv[3:]]  # as `python -m hftd agent ...` has it
        set_cmdline(*_titles(role, name, instance, runtime_dir, supervisor))
        set_comm(f"hftd-{role}")
        from .agent import main as agent_main

        code = agent_main(role, name, instance, runtime_dir, known)
    except SystemExit as e:
        code = e.code
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        if isinstance(code, str):
            print(code, file=sys.stderr)
            code = 1
        try:
            _at_exit()
        finally:
            os._exit(0 if code is None else code)


def _at_exit() -> None:
    """What the interpreter does at exit (`hftd agent` ends with sys.exit): the exit handlers
    the agent registered, unless threads a library left running would hang it
    (hftd.cli._exit), then flush stdio. Never an unwinding into the frames below us."""
    import threading

    main = threading.main_thread()
    if not any(t is not main and not t.daemon and t.is_alive() for t in threading.enumerate()):
        try:
            atexit._run_exitfuncs()
        except BaseException:
            pass
    sys.stdout.flush()
    sys.stderr.flush()


def _close_fds_but(keep: int) -> None:
    if keep > 2:
        os.closerange(3, keep)
        os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))
    else:
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
