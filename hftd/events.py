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
"""

from __future__ import annotations

import enum

import msgspec


class Side(enum.IntEnum):
    BUY = 1
    SELL = -1


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
    UNKNOWN_ORDER = 13  # cancel/replace of an order the executor does not know


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
    order_id: int
    instrument: int
    side: int  # Side
    qty: int
    price: int = 0  # limit price in ticks; 0 = market
    ref_price: int = 0  # last traded price the strategy saw (the simulated venue fills here)


class OrderReport(msgspec.Struct, array_like=True, tag=3, gc=False):
    seq: int
    t_ingest: int
    order_id: int
    kind: int  # ReportKind
    instrument: int
    side: int
    qty: int  # filled quantity for FILL, order quantity otherwise
    price: int = 0  # fill price in ticks
    reason: int = 0  # RejectReason


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
