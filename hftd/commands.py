"""Commands the supervisor hands to one agent (e.g. `hftd conditions add`), and their
replies, without putting them in a ring.

A command may be larger than a control slot and its reply is text for a person, so both
travel as small files in the instance's private runtime directory (ours, mode 0700; written
atomically, never following a symlink), and only a sequence number travels in the control
ring (ControlKind.COMMAND, `arg` = seq). The agent applies the command, writes the reply
file, then stores `seq` in its stats value `command_done`: the supervisor sees that value
and reads the reply. One command per agent is in flight at a time.
"""

from __future__ import annotations

import os
from typing import Any

import msgspec

from . import identity


class Command(msgspec.Struct, forbid_unknown_fields=True):
    seq: int
    name: str  # e.g. "conditions"
    args: dict[str, Any] = {}


class CommandReply(msgspec.Struct, forbid_unknown_fields=True):
    seq: int
    ok: bool
    detail: str = ""


def _path(runtime_dir: str, instance: str, agent: str, what: str) -> str:
    return os.path.join(runtime_dir, f"{instance}.{agent}.{what}.json")


def write_command(runtime_dir: str, instance: str, agent: str, cmd: Command) -> None:
    identity.write_private(_path(runtime_dir, instance, agent, "command"), msgspec.json.encode(cmd))


def read_command(runtime_dir: str, instance: str, agent: str) -> Command:
    return msgspec.json.decode(
        identity.read_private(_path(runtime_dir, instance, agent, "command")), type=Command)


def write_reply(runtime_dir: str, instance: str, agent: str, reply: CommandReply) -> None:
    identity.write_private(_path(runtime_dir, instance, agent, "reply"), msgspec.json.encode(reply))


def read_reply(runtime_dir: str, instance: str, agent: str) -> CommandReply:
    return msgspec.json.decode(
        identity.read_private(_path(runtime_dir, instance, agent, "reply")), type=CommandReply)


def remove_all(runtime_dir: str, instance: str, agent: str) -> None:
    for what in ("command", "reply"):
        try:
            os.unlink(_path(runtime_dir, instance, agent, what))
        except FileNotFoundError:
            pass
