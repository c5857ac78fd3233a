"""The `hftd` command line."""

from __future__ import annotations

import math
import os
import signal
import sys

import click

from . import config as config_mod


def _load(config_path, overrides=None):
    try:
        return config_mod.load(config_path, overrides)
    except config_mod.ConfigError as e:  # one line and exit status 2, never a traceback
        click.echo(f"hftd: config error: {e}", err=True)
        sys.exit(2)


class Finite(click.FloatRange):
    """A float range that also refuses nan and infinity (FloatRange lets nan through)."""

    def convert(self, value, param, ctx):
        v = super().convert(value, param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return v


@click.group()
@click.version_option(package_name="hftd")
def main():
    """hftd: low-latency futures trading daemon."""


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="TOML config file (default: the embedded default config).")
@click.option("--duration", type=Finite(min=0, min_open=True),
              help="Stop (draining the pipeline) after this many seconds.")
@click.option("--ticks", type=click.IntRange(min=1),
              help="Stop after the feed has produced this many ticks (synthetic feed).")
@click.option("--rate", type=Finite(min=0),
              help="Synthetic feed rate in ticks/s; 0 = as fast as the pipeline takes them.")
@click.option("--instance", help="Instance name (overrides the config's `instance`).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False),
              help="Write the end-of-run report as JSON to this file.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error", "critical"],
                                               case_sensitive=False),
              help="Log this level and above (overrides the config's supervisor.log_level).")
def run(config_path, duration, ticks, rate, instance, report_path, log_level):
    """Run the pipeline in the foreground until Ctrl-C, --duration or --ticks.

    The log (every agent's too) goes to stderr; the end-of-run summary to stdout."""
    from .supervisor import Supervisor

    overrides = {}
    synthetic = {}
    if ticks:
        synthetic["ticks"] = ticks
    if rate is not None:
        synthetic["rate"] = rate
    if synthetic:
        overrides["producer"] = {"synthetic": synthetic}
    if instance is not None:  # "" is a bad name, not "the config's"
        overrides["instance"] = instance
    if log_level is not None:  # in the spec the agents read, so they log at it too
        overrides["supervisor"] = {"log_level": log_level.lower()}
    cfg = _load(config_path, overrides)
    if report_path:
        _check_writable(report_path)
    sup = Supervisor(cfg, duration=duration, report_path=report_path, config_path=config_path,
                     overrides=overrides)
    try:
        config_mod.check_runnable(cfg, config_path)  # what check-config checks too
    except config_mod.ConfigError as e:
        click.echo(f"hftd: config error: {e}", err=True)
        sys.exit(2)
    sys.exit(sup.run())


@main.command("check-config")
@click.argument("config_path", type=click.Path(dir_okay=False), required=False)
def check_config(config_path):
    """Validate a config file (or the embedded default) and print it resolved: accepts exactly
    what `hftd run` can run. Exit status 0 if valid, 2 (one line on stderr) if not."""
    import msgspec

    cfg = _load(config_path)
    try:
        config_mod.check_runnable(cfg, config_path)
    except config_mod.ConfigError as e:
        click.echo(f"hftd: config error: {e}", err=True)
        sys.exit(2)
    click.echo(msgspec.json.format(msgspec.json.encode(cfg), indent=2).decode())


@main.command(hidden=True)
@click.argument("role", type=click.Choice(["producer", "dispatcher", "strategy", "executor"]))
@click.option("--name", help="Strategy name (role strategy).")
@click.option("--instance", required=True)
@click.option("--runtime-dir", required=True)
@click.option("--supervisor-pid", type=int, help="Checked first thing (hftd.lifeline).")
def agent(role, name, instance, runtime_dir, supervisor_pid):
    """Run one agent process (started by the supervisor)."""
    from .agent import main as agent_main

    if role == "strategy" and not name:
        raise click.UsageError("role strategy needs --name")
    try:
        code = agent_main(role, name, instance, runtime_dir)  # it logs its own failures
    except SystemExit as e:
        code = e.code
    except BaseException:  # (KeyboardInterrupt, say, while it was still importing)
        from .log import get

        who = f"strategy.{name}" if role == "strategy" else role
        get(f"hftd[{instance}] {who}").critical("error: uncaught exception", exc_info=True)
        code = 1
    _exit(code)


def _exit(code) -> None:
    """Exit with `code`, even past threads a broker library left running: unitrade's are not
    daemon threads (found: a producer whose PFCF login failed printed its error and then
    hung, keeping the pipeline from starting until the supervisor's start timeout)."""
    import threading

    if isinstance(code, str):
        from .log import get

        get("hftd agent").error(code)
        code = 1
    code = 0 if code is None else code
    main_thread = threading.main_thread()
    if any(t is not main_thread and not t.daemon and t.is_alive()
           for t in threading.enumerate()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _check_writable(path: str) -> None:
    """Fail before the run, not after it, when the report cannot be written."""
    from . import identity

    try:
        identity.check_report_path(path)
    except OSError as e:
        _fail(f"--report {path}: cannot be written: {e.strerror}", 2)


def _fail(msg: str, code: int):
    click.echo(f"hftd: {msg}", err=True)
    sys.exit(code)


def _instance_options(f):
    f = click.option("--instance", help="Instance name (default: the config's).")(f)
    f = click.option("--config", "config_path", type=click.Path(dir_okay=False),
                     help="The config the instance runs with (for its name).")(f)
    return f


def _find(config_path, instance):
    """(instance name, the record of its live supervisor or None). The record comes from
    the instance lock beside its shared memory, so an instance is found whatever runtime
    directory it was started with (systemd's or a shell's)."""
    from . import identity

    name = instance
    if name is None:
        name = _load(config_path).instance
    from . import shm

    try:
        shm.check_instance_name(name)
    except ValueError as e:
        _fail(str(e), 2)
    try:
        return name, identity.running(name)
    except identity.IdentityError as e:
        _fail(str(e), 1)


def _send(config_path, instance, cmd, timeout=5.0, **args):
    """Send `cmd` to the running instance; returns (name, record, reply). Exits 3 when it is
    not running, 1 when it cannot be reached."""
    from . import control

    name, rec = _find(config_path, instance)
    if rec is None:
        _fail(f"instance {name!r} is not running", 3)
    path = control.socket_path(rec.runtime_dir, name)
    try:
        return name, rec, control.request(path, cmd, timeout, **args)
    except ConnectionError:
        from . import identity

        if identity.running(name) is None:
            _fail(f"instance {name!r} is not running", 3)
        _fail(f"instance {name!r} (supervisor pid {rec.pid}) does not answer on {path}", 1)
    except PermissionError:
        _fail(f"permission denied on {path}: only the instance's user (or root) may control "
              f"it", 1)
    except (TimeoutError, OSError) as e:
        _fail(f"instance {name!r} (supervisor pid {rec.pid}): {e}", 1)


def _command(config_path, instance, cmd):
    _, _, reply = _send(config_path, instance, cmd)
    click.echo(reply.detail)
    sys.exit(0 if reply.ok else 1)


@main.command()
@_instance_options
def pause(config_path, instance):
    """Kill switch on: no new orders until `hftd resume`."""
    _command(config_path, instance, "pause")


@main.command()
@_instance_options
def resume(config_path, instance):
    """Kill switch off: trading resumes."""
    _command(config_path, instance, "resume")


@main.command()
@_instance_options
def reload(config_path, instance):
    """Re-read the instance's config file and apply what may change live (risk limits,
    strategy params, idle strategy, status interval); refused, with nothing changed, when
    anything else changed. Same as SIGHUP to the supervisor."""
    _command(config_path, instance, "reload")


@main.command()
@_instance_options
@click.option("--no-wait", is_flag=True, help="Return once the stop is requested.")
@click.option("--timeout", type=Finite(min=0), default=120.0, show_default=True,
              help="Seconds to wait for the instance to exit.")
def stop(config_path, instance, no_wait, timeout):
    """Drain the pipeline front to back and stop the instance; waits until it has exited.
    Exit status 0 when it is stopped (or was not running), 1 when it still runs after
    --timeout."""
    import time

    from . import identity

    name, rec = _find(config_path, instance)
    if rec is None:
        click.echo(f"instance {name!r} is not running")
        sys.exit(0)
    try:
        _, rec, reply = _send(config_path, name, "stop")
    except SystemExit as e:
        if e.code == 3:  # it stopped between the look and the request
            click.echo(f"instance {name!r} is not running")
            sys.exit(0)
        raise
    click.echo(reply.detail)
    if not reply.ok:
        sys.exit(1)
    if no_wait:
        sys.exit(0)
    deadline = time.monotonic() + timeout
    while identity.alive(rec):  # the process itself: it writes its report before exiting
        if time.monotonic() > deadline:
            _fail(f"instance {name!r} (supervisor pid {rec.pid}) still running after "
                  f"{timeout:g} s", 1)
        time.sleep(0.05)
    click.echo(f"instance {name!r} stopped")


@main.group()
def conditions():
    """The conditions strategy's support/resistance conditions, changed while it runs.

    Prices and points are in the instrument's price units (index points; TE/TF decimals)."""


def _conditions(config_path, instance, strategy, op, **args):
    args = {k: v for k, v in args.items() if v is not None}
    if strategy is not None:
        args["strategy"] = strategy
    _, _, reply = _send(config_path, instance, "conditions", timeout=10.0, op=op, **args)
    click.echo(reply.detail, err=not reply.ok)
    sys.exit(0 if reply.ok else 1)


def _strategy_option(f):
    return click.option("--strategy", help="The strategy (needed when several run).")(f)


@conditions.command("list")
@_instance_options
@_strategy_option
@click.option("--json", "as_json", is_flag=True, help="Print them as JSON.")
def conditions_list(config_path, instance, strategy, as_json):
    """Every condition with its phase and current levels."""
    _conditions(config_path, instance, strategy, "list", json=as_json or None)


@conditions.command("add")
@_instance_options
@_strategy_option
@click.option("--id", "cond_id", required=True, help="A unique id.")
@click.option("--instrument", required=True, help="Symbol of the instrument it trades.")
@click.option("--action", required=True, type=click.Choice(["BUY", "SELL"], case_sensitive=False))
@click.option("--trigger", "trigger_price", required=True,
              help="Price that arms it (support for BUY, resistance for SELL).")
@click.option("--quantity", required=True, type=click.IntRange(min=1), help="Lots per order.")
@click.option("--turning-point", help="How far price must turn back to enter [15].")
@click.option("--take-profit", "take_profit_point", help="Take-profit distance [90].")
@click.option("--stop-loss", "stop_loss_point", help="Stop-loss distance [30].")
@click.option("--following/--no-following", "is_following", default=None,
              help="Levels trail the price while armed [no].")
def conditions_add(config_path, instance, strategy, cond_id, instrument, action, trigger_price,
                   quantity, turning_point, take_profit_point, stop_loss_point, is_following):
    """Add a condition (refused, with the set unchanged, if anything is wrong)."""
    _conditions(config_path, instance, strategy, "add", id=cond_id, instrument=instrument,
                action=action.upper(), trigger_price=trigger_price, quantity=quantity,
                turning_point=turning_point, take_profit_point=take_profit_point,
                stop_loss_point=stop_loss_point, is_following=is_following)


@conditions.command("remove")
@_instance_options
@_strategy_option
@click.argument("cond_id")
@click.option("--force", is_flag=True,
              help="Also one with an order out or a position open (it is left as it is).")
def conditions_remove(config_path, instance, strategy, cond_id, force):
    """Remove a condition."""
    _conditions(config_path, instance, strategy, "remove", id=cond_id, force=force or None)


def _view(config_path, instance, as_json=False):
    """The running instance, or exit 3 (LSB: program is not running) with a clear message."""
    return _attach(*_find(config_path, instance), as_json)


def _attach(name, rec, as_json=False):
    """The view of instance `name` whose supervisor is `rec` (`_find`'s), or exit 3."""
    from .monitor import InstanceView, NotRunning

    try:
        if rec is None:
            raise NotRunning(f"instance {name!r} is not running")
        return InstanceView.attach(name, rec.runtime_dir)
    except (NotRunning, FileNotFoundError) as e:
        if as_json:
            import json

            click.echo(json.dumps({"instance": name, "running": False}))
        click.echo(f"hftd: {e}" if isinstance(e, NotRunning) else
                   f"hftd: instance {name!r} is not running ({e})", err=True)
        sys.exit(3)


@main.command()
@_instance_options
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
def status(config_path, instance, as_json):
    """Agents, rates, occupancy, backpressure, accounting and latency of a running instance.

    Reads the instance's shared memory directly. Exit status 0 when it runs, 3 when not."""
    import msgspec

    from .console import render

    view = _view(config_path, instance, as_json)
    try:
        st = view.status()
    except FileNotFoundError:
        _fail(f"instance {view.cfg.instance!r} stopped while being read", 3)
    finally:
        view.close()
    if as_json:
        st["running"] = True
        click.echo(msgspec.json.format(msgspec.json.encode(st), indent=2).decode())
    else:
        click.echo(render(st))


@main.command()
@_instance_options
@click.option("--interval", type=Finite(min=0.1), default=1.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--iterations", type=click.IntRange(min=1), help="Stop after this many refreshes.")
def top(config_path, instance, interval, iterations):
    """A live view of a running instance, redrawn in place: agents, rates and latency of the
    last 10 s beside lifetime ones, rings, orders, positions. q or Ctrl-C quits.

    Exit status 0 when quit (or after --iterations), 3 when the instance is not running: it
    was not when top started, or it exited while top watched it (top then says when, and
    what its shared memory last said)."""
    import time

    from .console import instance_state, top_frame
    from .monitor import History, Presence
    from .terminal import KeyReader, Screen

    name, rec = _find(config_path, instance)
    view = _attach(name, rec)
    presence = Presence(name, rec, view)
    history = History(span_s=10.0)
    n = 0
    seen = time.time()  # when the instance was last seen running
    gone = st = None

    def _quit(signum, frame):
        raise KeyboardInterrupt

    # SIGTERM (`timeout 60 hftd top`, kill) and SIGHUP (the terminal closed) leave as q and
    # Ctrl-C do, through the `with` below: found, their default action ended top with the
    # terminal in cbreak mode (no echo, no line editing) and the cursor hidden
    signal.signal(signal.SIGTERM, _quit)
    signal.signal(signal.SIGHUP, _quit)
    try:
        with KeyReader() as keys, Screen() as screen:
            while True:
                gone = presence.gone()
                # after it has gone, the memory still mapped holds its last figures: they are
                # the last frame
                try:
                    snaps = view.snapshots()
                    history.add(view.reading(snaps))
                    st = view.status(rate_window_s=0, snaps=snaps)
                except OSError as e:  # what it reads beside its shared memory went with it
                    gone = gone or presence.gone() or f"it could not be read: {e}"
                    break
                wall = seen if gone else time.time()
                uptime = max(wall - rec.started, 1e-9)
                lately = {"interval": history.interval(), "window": history.window(),
                          "uptime_s": uptime,
                          "lifetime_rates_per_s": {k: v / uptime for k, v in
                                                   history.newest.counts.items()}}
                screen.draw(top_frame(st, lately, now=time.strftime("%H:%M:%S %Z"),
                                      state="EXITED" if gone else
                                      instance_state(st["agents"])),
                            footer="" if gone else "(q or Ctrl-C to quit)")
                if gone:
                    break
                seen = wall
                n += 1
                if iterations and n >= iterations:
                    break
                if keys.wait_for("q", interval):
                    break
    except KeyboardInterrupt:
        pass
    finally:
        view.close()
    if gone:
        _exited(name, rec, gone, seen, st["agents"] if st else {})


def _exited(name, rec, why, seen, agents):
    """Say that the instance `top` watched has exited, and exit 3."""
    import time

    from . import identity
    from .terminal import fit, size

    if identity.alive(rec):  # its shared memory went first: the process ends right after
        deadline = time.monotonic() + 5.0
        while identity.alive(rec) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not identity.alive(rec):
            why += f", then supervisor pid {rec.pid} ended"
        else:
            why += f"; supervisor pid {rec.pid} still finishing"
    stamp = "%H:%M:%S %Z"
    states = ", ".join(f"{a} {s['state']}" for a, s in agents.items())
    lines = [f"hftd: instance {name!r} exited between {time.strftime(stamp, time.localtime(seen))}"
             f" and {time.strftime(stamp)} ({why})"]
    if agents:
        lines.append(f"  agents' last states: {states}" + (
            " (drained and stopped)" if all(s["state"] == "stopped" for s in agents.values())
            else " (stopped: drained; exited: left on a signal; any other: killed)"))
    lines.append(f"  its exit status went to what started it (a shell, or systemd: systemctl "
                 f"status hftd@{name})")
    click.echo("\n".join(fit(lines, size()[0])), err=True)
    sys.exit(3)
