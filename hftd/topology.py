"""Which agents and rings an instance has, derived from its config.

One place names everything: the supervisor creates what is listed here, agents attach to
it, and `hftd status` reads it. Agent names: ``producer``, ``dispatcher``,
``strategy.<name>``, ``executor``. Ring names: ``ticks.in`` (producer -> dispatcher),
``ticks.<s>`` (dispatcher -> strategy s), ``ticks.executor`` (dispatcher -> executor: every
tick, the simulated venue's market data), ``orders.<s>`` (strategy s -> executor),
``reports.<s>`` (executor -> strategy s), ``control.<agent>`` (supervisor -> agent).
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import Config, RingConfig

SUPERVISOR = "supervisor"
MARKET_DATA = "ticks.executor"  # the executor's ticks ring (config forbids a strategy named so)


@dataclass(frozen=True)
class RingSpec:
    name: str
    writer: str
    reader: str
    geometry: RingConfig


@dataclass(frozen=True)
class AgentSpec:
    name: str  # "strategy.alpha"
    role: str  # "strategy"
    cpus: tuple[int, ...]


def strategy_agent(name: str) -> str:
    return f"strategy.{name}"


def agents(cfg: Config) -> list[AgentSpec]:
    """Agents in pipeline order (front to back): the order of start-up and of shutdown."""
    out = [AgentSpec("producer", "producer", tuple(cfg.producer.cpus)),
           AgentSpec("dispatcher", "dispatcher", tuple(cfg.dispatcher.cpus))]
    for s in cfg.strategies:
        out.append(AgentSpec(strategy_agent(s.name), "strategy", tuple(s.cpus)))
    out.append(AgentSpec("executor", "executor", tuple(cfg.executor.cpus)))
    return out


def rings(cfg: Config) -> list[RingSpec]:
    r = cfg.rings
    out = [RingSpec("ticks.in", "producer", "dispatcher", r.ticks),
           RingSpec(MARKET_DATA, "dispatcher", "executor", r.ticks)]
    for s in cfg.strategies:
        a = strategy_agent(s.name)
        out.append(RingSpec(f"ticks.{s.name}", "dispatcher", a, r.ticks))
        out.append(RingSpec(f"orders.{s.name}", a, "executor", r.orders))
        out.append(RingSpec(f"reports.{s.name}", "executor", a, r.reports))
    for a in agents(cfg):
        out.append(RingSpec(f"control.{a.name}", SUPERVISOR, a.name, r.control))
    return out


def stats_name(agent: str) -> str:
    return f"stats.{agent}"


def doorbell_name(agent: str) -> str:
    return f"bell.{agent}"
