"""Feed adapters: turn an outside source into columns of ticks inside the producer.

A feed has one method, ``poll(max_n, now_ns) -> FeedBatch | None`` (None: nothing due now),
and one property, ``exhausted`` (the source has ended: the producer then ends its stream).
A feed a restarted producer can continue also has ``position`` (ticks taken so far) and
``advance(n)`` (skip the first n): `synthetic` (a random walk), `taifex` (TAIFEX's daily
tick files, hftd.feeds.taifex) and `recording` (a session recorded with `[producer] record`,
hftd.feeds.recording) all do. `pfcf` (PFCF's live quotes through unitrade, hftd.feeds.pfcf)
has no position and never ends by itself.
Columns rather than objects, so the producer can validate a batch with numpy; a poll of a
few ticks may return Python lists instead of arrays (numpy's per-call cost would dominate).
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass

import numpy as np


@dataclass
class FeedBatch:
    instrument: np.ndarray  # int32 instrument ids (index into config's instruments); or lists
    price: np.ndarray  # int64 price in ticks
    qty: np.ndarray  # int64
    t_exchange: np.ndarray  # int64 ns since the epoch (0 = unknown)

    def __len__(self) -> int:
        return len(self.instrument)

    def select(self, which) -> "FeedBatch":
        """The ticks at `which` (a mask, an index array or a slice)."""
        return FeedBatch(self.instrument[which], self.price[which], self.qty[which],
                         self.t_exchange[which])


def make(cfg, **kw):
    if cfg.producer.feed == "synthetic":
        from .synthetic import SyntheticFeed

        return SyntheticFeed(cfg.producer.synthetic, len(cfg.instruments))
    if cfg.producer.feed == "taifex":
        from .taifex import TaifexFeed

        return TaifexFeed(cfg.producer.taifex, cfg.instruments, **kw)
    if cfg.producer.feed == "recording":
        from .recording import RecordingFeed

        return RecordingFeed(cfg.producer.recording, cfg.instruments, **kw)
    if cfg.producer.feed == "pfcf":
        from .pfcf import PfcfFeed

        return PfcfFeed(cfg, **kw)
    raise ValueError(f"producer.feed: unknown feed {cfg.producer.feed!r}")


def column(x) -> list:
    """A FeedBatch column as a list of Python ints, whichever form it has."""
    return x.tolist() if isinstance(x, np.ndarray) else x


_GLOB_CHARS = re.compile(r"[*?\[]")


def files_named(path: str, in_dir, what_in_dir: str, error) -> list[str]:
    """The files a file feed's `path` names, unordered: the file itself, the files of a
    directory whose names `in_dir(name)` accepts (else `error(f"directory {path} has no
    {what_in_dir}")`), or a glob's files; `error(message)` when it names none."""
    if not path:
        raise error("no path given")
    if os.path.isdir(path):
        found = [os.path.join(path, f) for f in os.listdir(path) if in_dir(f)]
        what = f"directory {path} has no {what_in_dir}"
    elif _GLOB_CHARS.search(path):
        found = [f for f in glob.glob(path) if os.path.isfile(f)]
        what = f"{path!r} matches no file"
    else:
        found = [path] if os.path.isfile(path) else []
        what = f"{path}: no such file"
    if not found:
        raise error(what)
    return found


def files_id(paths: list[str]) -> int:
    """A 62-bit fingerprint of a file feed's files: their names, sizes and modification
    times (a missing one counts as changed)."""
    import hashlib

    h = hashlib.blake2b(digest_size=8)
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        except OSError:
            h.update(f"{p}\0missing\0".encode())
    return (int.from_bytes(h.digest(), "little") >> 2) or 1
