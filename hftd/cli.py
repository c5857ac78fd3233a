"""The `hftd` command line."""

from __future__ import annotations

import sys

import click

from . import config as config_mod


def _load(config_path, overrides=None):
    try:
        return config_mod.load(config_path, overrides)
    except config_mod.ConfigError as e:
        raise click.ClickException(f"config error: {e}") from None


@click.group()
@click.version_option(package_name="hftd")
def main():
    """hftd: low-latency futures trading daemon."""


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="TOML config file (default: the embedded default config).")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True),
              help="Stop (draining the pipeline) after this many seconds.")
@click.option("--ticks", type=click.IntRange(min=1),
              help="Stop after the feed has produced this many ticks (synthetic feed).")
@click.option("--rate", type=click.FloatRange(min=0),
              help="Synthetic feed rate in ticks/s; 0 = as fast as the pipeline takes them.")
@click.option("--instance", help="Instance name (overrides the config's `instance`).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False),
              help="Write the end-of-run report as JSON to this file.")
def run(config_path, duration, ticks, rate, instance, report_path):
    """Run the pipeline in the foreground until Ctrl-C, --duration or --ticks."""
    from .supervisor import Supervisor

    overrides = {}
    synthetic = {}
    if ticks:
        synthetic["ticks"] = ticks
    if rate is not None:
        synthetic["rate"] = rate
    if synthetic:
        overrides["producer"] = {"synthetic": synthetic}
    if instance:
        overrides["instance"] = instance
    cfg = _load(config_path, overrides)
    sup = Supervisor(cfg, duration=duration, report_path=report_path)
    try:
        sup.preflight()
    except config_mod.ConfigError as e:
        raise click.ClickException(f"config error: {e}") from None
    sys.exit(sup.run())


@main.command("check-config")
@click.argument("config_path", type=click.Path(dir_okay=False), required=False)
def check_config(config_path):
    """Validate a config file (or the embedded default) and print it resolved."""
    import msgspec

    cfg = _load(config_path)
    click.echo(msgspec.json.format(msgspec.json.encode(cfg), indent=2).decode())


@main.command(hidden=True)
@click.argument("role", type=click.Choice(["producer", "dispatcher", "strategy", "executor"]))
@click.option("--name", help="Strategy name (role strategy).")
@click.option("--instance", required=True)
@click.option("--runtime-dir", required=True)
def agent(role, name, instance, runtime_dir):
    """Run one agent process (started by the supervisor)."""
    from .agent import main as agent_main

    if role == "strategy" and not name:
        raise click.UsageError("role strategy needs --name")
    sys.exit(agent_main(role, name, instance, runtime_dir))


def _instance_options(f):
    f = click.option("--instance", help="Instance name (default: the config's).")(f)
    f = click.option("--config", "config_path", type=click.Path(dir_okay=False),
                     help="The config the instance runs with (for its name and runtime dir).")(f)
    return f


def _send(config_path, instance, cmd):
    from . import control

    cfg = _load(config_path, {"instance": instance} if instance else None)
    path = control.socket_path(cfg.resolved_runtime_dir(), cfg.instance)
    try:
        reply = control.request(path, cmd)
    except ConnectionError as e:
        click.echo(f"hftd: instance {cfg.instance!r} is not running ({e})", err=True)
        sys.exit(3)
    click.echo(reply.detail)
    sys.exit(0 if reply.ok else 1)


@main.command()
@_instance_options
def pause(config_path, instance):
    """Kill switch on: no new orders until `hftd resume`."""
    _send(config_path, instance, "pause")


@main.command()
@_instance_options
def resume(config_path, instance):
    """Kill switch off: trading resumes."""
    _send(config_path, instance, "resume")


@main.command()
@_instance_options
def stop(config_path, instance):
    """Drain the pipeline front to back and stop the instance."""
    _send(config_path, instance, "stop")


def _view(config_path, instance):
    """The running instance, or exit 3 (LSB: program is not running) with a clear message."""
    from .monitor import InstanceView, NotRunning

    cfg = _load(config_path, {"instance": instance} if instance else None)
    try:
        return InstanceView.attach(cfg)
    except (NotRunning, FileNotFoundError) as e:
        click.echo(f"hftd: {e}" if isinstance(e, NotRunning) else
                   f"hftd: instance {cfg.instance!r} is not running ({e})", err=True)
        sys.exit(3)


@main.command()
@_instance_options
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
def status(config_path, instance, as_json):
    """Agents, rates, occupancy, backpressure, accounting and latency of a running instance.

    Reads the instance's shared memory directly. Exit status 0 when it runs, 3 when not."""
    import msgspec

    from .console import render

    view = _view(config_path, instance)
    try:
        st = view.status()
    finally:
        view.close()
    if as_json:
        click.echo(msgspec.json.format(msgspec.json.encode(st), indent=2).decode())
    else:
        click.echo(render(st))


@main.command()
@_instance_options
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--iterations", type=click.IntRange(min=1), help="Stop after this many refreshes.")
def top(config_path, instance, interval, iterations):
    """A live view of a running instance; q or Ctrl-C quits."""
    from .console import render
    from .monitor import NotRunning
    from .terminal import KeyReader

    view = _view(config_path, instance)
    n = 0
    last = None  # rates come from refresh to refresh: none on the first
    try:
        with KeyReader() as keys:
            while True:
                try:
                    st = view.status(rate_window_s=0, since=last)
                    last = view.sample()
                except FileNotFoundError:
                    raise NotRunning("the instance stopped")
                click.echo("\x1b[H\x1b[2J" + render(st) + "\n\n(q or Ctrl-C to quit)", nl=True)
                n += 1
                if iterations and n >= iterations:
                    break
                if keys.wait_for("q", interval):
                    break
    except KeyboardInterrupt:
        pass
    except NotRunning as e:
        click.echo(f"hftd: {e}", err=True)
    finally:
        view.close()
