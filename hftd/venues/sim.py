"""Simulated venue: acks every order at once and fills it after a fixed latency.

Market orders (price 0) fill in full at the last traded price the strategy saw when it sent
the order (`ref_price`: the executor has no market data of its own). A limit order that is
marketable against that price fills at it; one that is not rests, and is cancelled when its
strategy's stream ends. With a fixed latency, orders fall due in arrival order: a FIFO.
"""

from __future__ import annotations

from collections import deque

from ..events import ReportKind, Side


class SimVenue:
    def __init__(self, latency_ns: int):
        self.latency_ns = latency_ns
        self.due: deque = deque()  # (due_ns, owner, order)
        self.resting: dict[int, list] = {}
        self.counts: dict[int, int] = {}

    def submit(self, order, owner: int, now_ns: int):
        self.counts[owner] = self.counts.get(owner, 0) + 1
        marketable = (order.price == 0 or (order.side == Side.BUY and order.price >= order.ref_price)
                      or (order.side == Side.SELL and order.price <= order.ref_price))
        if marketable:
            self.due.append((now_ns + self.latency_ns, owner, order))
        else:
            self.resting.setdefault(owner, []).append(order)
        return ReportKind.ACK, 0

    def poll(self, now_ns: int) -> list:
        due = self.due
        out = []
        while due and due[0][0] <= now_ns:
            _, owner, order = due.popleft()
            self.counts[owner] -= 1
            out.append((owner, order, order.qty, order.ref_price))
        return out

    def next_due_ns(self) -> int | None:
        """When the next fill falls due (None: nothing pending)."""
        return self.due[0][0] if self.due else None

    def pending(self, owner: int) -> int:
        return self.counts.get(owner, 0) - len(self.resting.get(owner, ()))

    def cancel_all(self, owner: int) -> list:
        orders = self.resting.pop(owner, [])
        self.counts[owner] = self.counts.get(owner, 0) - len(orders)
        return orders
