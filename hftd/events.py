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

import msgspec


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
