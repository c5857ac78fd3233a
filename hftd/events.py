"""Wire schema: the msgspec Structs that travel through the rings.

Every struct is ``array_like`` (encoded as a msgpack array, no field names on the wire)
and tagged, so one ring carries one tagged union: ticks rings carry ``Tick | Control``,
orders rings ``OrderRequest | Control``, reports rings ``OrderReport | Control``.
Prices are integers in the instrument's minimum tick (fixed point); there are no floats
in the order path. Times are CLOCK_MONOTONIC nanoseconds (``time.monotonic_ns()``), which
is one clock for every process on the machine.

``seq`` is the per-ring sequence number of the event (its position in the ring it was
written to); for ticks it is the producer's sequence, which stays with the tick end to end.
``t_ingest`` is when the producer took the originating tick from its feed.

Orders: a strategy names each of its orders with a client order id, unique for the
instance's whole life (the strategy's index in its top 24 bits, a counter below: see
hftd/stages/strategy.py). An `OrderRequest` is a NEW order, or a CANCEL or REPLACE of a
working one (REPLACE carries the order's new total quantity and price). The executor answers
with `OrderReport`s; every order gets exactly one terminal report (REJECT, the FILL that
completes it, CANCELED or EXPIRED), and every report carries the order's cumulative `filled`
and its `leaves` after the event, so either side can check the other's arithmetic.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import msgspec
import numpy as np


# Client order ids: (strategy index << ORDER_ID_SHIFT) | n, n = 1, 2, 3, ... per strategy
ORDER_ID_SHIFT = 40


class Side(enum.IntEnum):
    BUY = 1
    SELL = -1


class OrderAction(enum.IntEnum):
    NEW = 0
    CANCEL = 1
    REPLACE = 2  # qty: the order's new total quantity (> filled); price: its new price


class ReportKind(enum.IntEnum):
    ACK = 1
    REJECT = 2
    FILL = 3
    CANCELED = 4
    EXPIRED = 5  # an IOC/FOK remainder the venue did not fill
    REPLACED = 6  # a replace (price, quantity) took effect
    CANCEL_REJECTED = 7  # a cancel or replace came too late (the order had ended)


class ControlKind(enum.IntEnum):
    PAUSE = 1  # kill switch on: no new orders
    RESUME = 2
    SHUTDOWN = 3  # end of stream: drain, pass it on, stop
    RELOAD = 4  # re-read the instance's config spec and apply what may change live
    START = 5  # the whole pipeline is up: the producer may begin taking ticks
    QUARANTINE = 6  # strategy number `arg` is given up: stop feeding / serving it
    COMMAND = 7  # a command for this agent waits in the runtime dir (hftd.commands); arg = seq
    # a restarted strategy asks the executor for its state (on its orders ring); the executor
    # answers in order on the reports ring once the snapshot file is written (arg = its number)
    RECONCILE = 8
    RECONCILED = 9


class RejectReason(enum.IntEnum):
    NONE = 0
    PAUSED = 1
    MAX_ORDER_QTY = 2
    MAX_POSITION = 3
    UNKNOWN_INSTRUMENT = 4
    BAD_QTY = 5
    MAX_WORKING_ORDERS = 6
    ORDER_RATE = 7  # the strategy's token bucket is empty
    INSTANCE_ORDER_RATE = 8  # the instance's token bucket is empty
    PRICE_BAND = 9  # a limit price too far from the last trade
    NO_LAST_PRICE = 10  # a market order with no last trade to bound it
    DAILY_LOSS = 11  # the daily loss limit was crossed: kill switch
    BAD_PRICE = 12  # a limit price that is not positive
    UNKNOWN_ORDER = 13  # cancel/replace of an order the executor does not know (or that ended)
    DUPLICATE_ORDER_ID = 14  # a client order id already used, or not the strategy's own
    BAD_ORDER = 15  # an unknown action, order type or time in force; a market order with a price
    VENUE_REFUSED = 16  # the venue (the broker) refused it: its code and message are in the executor's log
    REPLACE_PENDING = 17  # a replace while the order's previous replace is on its way (PFCF takes one at a time)


class Tick(msgspec.Struct, array_like=True, tag=1, gc=False):
    seq: int
    t_ingest: int
    instrument: int
    price: int
    qty: int
    t_exchange: int = 0  # exchange timestamp, ns since the epoch (0 when unknown)


class OrderRequest(msgspec.Struct, array_like=True, tag=2, gc=False):
    seq: int
    t_ingest: int  # t_ingest of the tick that caused the order: tick-to-trade starts there
    order_id: int  # client order id (CANCEL/REPLACE: of the order to change)
    action: int  # OrderAction
    instrument: int
    side: int  # Side
    qty: int  # NEW: order quantity; REPLACE: new total quantity; CANCEL: 0
    price: int = 0  # limit price in ticks; 0 with a market order
    ord_type: int = 0  # hftd.trading.OrdType: MARKET 0, LIMIT 1
    tif: int = 0  # hftd.trading.TimeInForce: ROD 0, IOC 1, FOK 2
    tick_seq: int = -1  # seq of the tick whose on_tick sent it (-1: sent outside on_tick)


class OrderReport(msgspec.Struct, array_like=True, tag=3, gc=False):
    seq: int
    t_ingest: int  # the order's t_ingest (of the tick that caused it)
    order_id: int
    kind: int  # ReportKind
    instrument: int
    side: int
    # FILL: the fill's quantity; ACK, REJECT: the order's; REPLACED: the new total quantity;
    # CANCELED, EXPIRED: the leaves that ended; CANCEL_REJECTED: 0
    qty: int
    price: int = 0  # FILL: the fill price; REPLACED: the new price; else the order's price
    reason: int = 0  # RejectReason (REJECT, CANCEL_REJECTED)
    filled: int = 0  # the order's cumulative filled quantity after this event
    leaves: int = 0  # the order's quantity still working after this event (0 once ended)
    # the venue log sequence (hftd.venues.sim) of the last venue answer reported to this
    # strategy, this one included: a restarted executor reports the answers after it again
    vseq: int = 0


class Control(msgspec.Struct, array_like=True, tag=4, gc=False):
    seq: int
    t_ingest: int
    kind: int  # ControlKind
    arg: int = 0  # QUARANTINE: the strategy's index in the config


TickStream = Tick | Control
OrderStream = OrderRequest | Control
ReportStream = OrderReport | Control


class Codec:
    """One Encoder and one Decoder per process and stream type, reused for every event."""

    def __init__(self, stream_type):
        self.encoder = msgspec.msgpack.Encoder()
        self.decoder = msgspec.msgpack.Decoder(stream_type)
        self.encode = self.encoder.encode
        self.decode = self.decoder.decode


# --- ticks on the wire ---------------------------------------------------------------------
# A tick is written to a ticks ring as msgpack like any event, but with every field in its
# 9-byte int64 form (0xd3 + 8 bytes, big-endian), which msgpack allows for any integer: a
# tick is then always TICK_BYTES long, its fields at fixed offsets. Any msgspec decoder reads
# it as the Tick it is; a stage that wants columns views a run of slots with numpy instead of
# decoding (`tick_columns`), and the producer encodes a whole batch with a few numpy
# assignments (`encode_ticks`) instead of one msgspec call per tick.
TICK_FIELDS = Tick.__struct_fields__  # seq, t_ingest, instrument, price, qty, t_exchange
TICK_HEAD = (0x90 | (len(TICK_FIELDS) + 1), Tick.__struct_config__.tag)  # fixarray, tag
TICK_BYTES = 2 + 9 * len(TICK_FIELDS)  # 56
_INT64 = 0xD3
_FIELD_AT = [2 + 9 * k for k in range(len(TICK_FIELDS))]  # each field's 0xd3 marker


def _wire_dtype(itemsize: int) -> np.dtype:
    names, formats, offsets = ["head", "tag"], ["u1", "u1"], [0, 1]
    for name, at in zip(TICK_FIELDS, _FIELD_AT):
        names += ["m_" + name, name]
        formats += ["u1", ">i8"]
        offsets += [at, at + 1]
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": itemsize})


TICK_WIRE = _wire_dtype(TICK_BYTES)
_BLANK = np.zeros(1, TICK_WIRE)  # the wire form's constant bytes: array head, tag, markers
_BLANK["head"], _BLANK["tag"] = TICK_HEAD
for _name in TICK_FIELDS:
    _BLANK["m_" + _name] = _INT64
_SLOT_WIRE: dict[int, np.dtype] = {}  # the same layout over a ring's whole slot
_pack_tick = struct.Struct(">BB" + "Bq" * len(TICK_FIELDS)).pack


def encode_tick(seq: int, t_ingest: int, instrument: int, price: int, qty: int,
                t_exchange: int = 0) -> bytes:
    """One tick in the fixed-width wire form (a few ticks: cheaper than numpy)."""
    return _pack_tick(*TICK_HEAD, _INT64, seq, _INT64, t_ingest, _INT64, instrument,
                      _INT64, price, _INT64, qty, _INT64, t_exchange)


def encode_ticks(seq, t_ingest, instrument, price, qty, t_exchange) -> np.ndarray:
    """A batch of ticks in the fixed-width wire form: an (n, TICK_BYTES) uint8 array.
    Arguments are columns (arrays) or scalars broadcast to the batch; `seq` is its first."""
    n = len(instrument)
    rec = np.empty(n, TICK_WIRE)
    rec[...] = _BLANK
    rec["seq"] = np.arange(seq, seq + n, dtype=np.int64)
    rec["t_ingest"] = t_ingest
    rec["instrument"] = instrument
    rec["price"] = price
    rec["qty"] = qty
    rec["t_exchange"] = t_exchange
    return rec.view(np.uint8).reshape(n, TICK_BYTES)


@dataclass(slots=True, eq=False)
class TickColumns:
    """A run of ticks as numpy columns (native int64): what `Strategy.on_ticks` is given."""

    seq: np.ndarray
    t_ingest: np.ndarray
    instrument: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    t_exchange: np.ndarray

    def __len__(self) -> int:
        return len(self.seq)

    @classmethod
    def of(cls, ticks) -> "TickColumns":
        """Columns of decoded `Tick`s (ticks that did not come in the wire form)."""
        return cls(*(np.array([getattr(t, f) for t in ticks], dtype=np.int64)
                     for f in TICK_FIELDS))

    def select(self, which) -> "TickColumns":
        return TickColumns(*(getattr(self, f)[which] for f in TICK_FIELDS))

    def ticks(self) -> list[Tick]:
        """The same ticks as Tick objects (~90 ns a tick)."""
        return list(map(Tick, *(getattr(self, f).tolist() for f in TICK_FIELDS)))


def tick_columns(ring, position: int, n: int) -> tuple[int, TickColumns | None]:
    """The ticks in the wire form from `position` on (at most `n` slots of `ring`, a
    hftd.ring.Ring, and none past the ring's end: the rest is the next call's), as columns:
    (k, the columns of those k), k the length of the leading run of slots that hold one.
    When the first slot does not (a control event, or a tick written with minimal integers,
    for `RingReader.read` and a msgspec decoder): (m, None), m the length of the leading run
    of such slots. Copies the run once."""
    cap = ring.capacity
    start = position & ring.mask
    if start + n > cap:
        n = cap - start
    block = ring.slots[start: start + n]
    ok = ring.length[start: start + n] == TICK_BYTES
    ok &= block[:, 0] == TICK_HEAD[0]
    ok &= block[:, 1] == TICK_HEAD[1]
    ok &= (block[:, _FIELD_AT] == _INT64).all(axis=1)
    if not ok[0]:
        return (n if not ok.any() else int(np.argmax(ok))), None
    k = n if ok.all() else int(np.argmin(ok))
    wire = _SLOT_WIRE.get(ring.slot_size)
    if wire is None:
        wire = _SLOT_WIRE[ring.slot_size] = _wire_dtype(ring.slot_size)
    rec = block[:k].view(wire)[:, 0]
    return k, TickColumns(*(rec[f].astype(np.int64) for f in TICK_FIELDS))
