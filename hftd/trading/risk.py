"""Pre-trade risk: every order the executor is about to send passes `RiskEngine.check`, which
answers with the first limit the order breaks (a `RejectReason`) or `NONE`, and counts it.

The one idea: the checks are plain integer comparisons in a fixed order, and the only ones
with state, the order-rate token buckets, come last, so an order refused for any other
reason never spends a token (a strategy hammering a limit does not also starve its rate).

Order of the checks (the first failing one is the answer):

    1. PAUSED               the kill switch is on (operator pause, or the daily loss limit)
    2. BAD_QTY              qty <= 0, or side not +1/-1
       BAD_PRICE            a LIMIT order whose price is not positive
    3. MAX_ORDER_QTY        qty > max_order_qty
    4. MAX_WORKING_ORDERS   the strategy already has max_working_orders working orders
    5. MAX_POSITION         worst-case exposure on the order's side (below) > max_position
    6. NO_LAST_PRICE        a MARKET order with no last trade (last_price 0)
       PRICE_BAND           a LIMIT order more than price_band_ticks ticks, or more than
                            price_band_pct % of the last trade, away from the last trade
    7. ORDER_RATE           the strategy's token bucket is empty
       INSTANCE_ORDER_RATE  the instance's token bucket is empty
       (a token is taken from both only when both have one)

Worst-case exposure, per strategy and instrument: if every working order on the new order's
side filled, and the new order too, the position would be

    position + side * (working_same_side + qty)

where `position` is the signed filled position and `working_same_side` the (non-negative)
leaves of the strategy's working orders on that instrument and side. The order is refused
when that exceeds max_position *in the order's direction* (a buy: above +max, a sell: below
-max). Fills only move quantity from "working" to "position", so with every order checked
this way -max <= position - working_sells <= position <= position + working_buys <= +max
holds at all times: the same as |position + side * (working + qty)| <= max_position, except
after a reload that lowers the limit below the current position, when an order that reduces
the position is still accepted (the absolute form would refuse it).

A LIMIT order with no last trade yet passes the band (it bounds its own price); a MARKET
order with a last trade passes it (it has no price to check; the venue fills it at the
next trade). `instrument` is accepted so per-instrument limits can come without changing
the callers; today's limits are the same for every instrument.

Daily loss: the caller computes net P&L (realised + unrealised - fees - tax) and reports it
with `on_pnl`; at or below -daily_loss_limit the kill switch trips and every later order is
refused PAUSED. `resume()` lifts it, but the next `on_pnl` still at or below the limit trips
it again: to trade on after a loss trip, raise the limit with `reload`.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from ..events import RejectReason
from . import OrdType

NONE = RejectReason.NONE
PAUSED = RejectReason.PAUSED
BAD_QTY = RejectReason.BAD_QTY
BAD_PRICE = RejectReason.BAD_PRICE
MAX_ORDER_QTY = RejectReason.MAX_ORDER_QTY
MAX_WORKING_ORDERS = RejectReason.MAX_WORKING_ORDERS
MAX_POSITION = RejectReason.MAX_POSITION
NO_LAST_PRICE = RejectReason.NO_LAST_PRICE
PRICE_BAND = RejectReason.PRICE_BAND
ORDER_RATE = RejectReason.ORDER_RATE
INSTANCE_ORDER_RATE = RejectReason.INSTANCE_ORDER_RATE
DAILY_LOSS = RejectReason.DAILY_LOSS
_LIMIT = OrdType.LIMIT

NS = 1_000_000_000
PPM = 1_000_000  # price_band_pct is kept in millionths (1 % = 10,000 ppm): integer compare
_PCT_PPM = 10_000


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """The instance's limits. Rates are orders per second (int or float: kept as an exact
    fraction); 0 disables the price bands, the rate buckets and the daily loss limit."""

    max_order_qty: int = 10
    max_position: int = 50  # per strategy and instrument, filled + working on the side
    max_working_orders: int = 50  # per strategy, all instruments
    order_rate: float = 50  # per strategy, orders/s
    order_burst: int = 20
    instance_order_rate: float = 200
    instance_order_burst: int = 50
    price_band_ticks: int = 0
    price_band_pct: float = 0.0  # percent of the last trade price
    daily_loss_limit: float = 0  # currency, > 0; net P&L at or below -limit trips the switch

    def __post_init__(self):
        for name in ("max_order_qty", "max_position", "max_working_orders"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        for name in ("order_burst", "instance_order_burst", "price_band_ticks"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        for name in ("order_rate", "instance_order_rate", "price_band_pct", "daily_loss_limit"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not v >= 0 or v == float("inf"):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        for rate, burst in (("order_rate", "order_burst"),
                            ("instance_order_rate", "instance_order_burst")):
            if getattr(self, rate) > 0 and getattr(self, burst) < 1:
                raise ValueError(f"{burst} must be >= 1 when {rate} is set")


def trading_day(epoch_s: float, utc_offset_s: int, day_start_s: int) -> int:
    """The trading day at `epoch_s` (Unix time), as a day number: the local date (at
    `utc_offset_s` from UTC) on which it started, in days since 1970-01-01, for a day that
    starts `day_start_s` seconds after local midnight."""
    return int((epoch_s + utc_offset_s - day_start_s) // 86400)


class TokenBucket:
    """`rate_per_s` tokens a second up to `burst`, full at start; `take(now_ns)` spends one.

    Integer arithmetic only, so there is no drift however long it runs: the level is kept
    in units where one token costs `cost` = 1e9 * q and one nanosecond adds `p` units, with
    p/q the rate as an exact fraction (rate 2.5/s: p = 5, q = 2). Time that goes backwards
    adds nothing. A rate of 0 means unlimited (every take succeeds).

    The level and its time live in two words of a store (`keep_in`: the executor's stats
    block, where a restarted executor finds them; a private pair until then), as the strategy
    ids of `IdSource` do."""

    __slots__ = ("per_ns", "cost", "cap", "unlimited", "_s", "_il", "_it")

    def __init__(self, rate_per_s: float, burst: int):
        self._s, self._il, self._it = [0, 0], 0, 1
        self.cost = 0
        self.configure(rate_per_s, burst)
        self.level = self.cap  # full at start

    @property
    def level(self) -> int:
        return self._s[self._il]

    @level.setter
    def level(self, v: int) -> None:
        self._s[self._il] = v

    @property
    def t(self) -> int:
        return self._s[self._it]

    def keep_in(self, store, i_level: int, i_t: int, resume: bool) -> None:
        """From now on keep the level and its time in `store[i_level]`, `store[i_t]`. With
        `resume` (a restarted executor) take back what a previous process left there, one
        token lower (never handing out a token twice: the rate is never exceeded across a
        restart); a bucket never used there (time 0) stays as it is."""
        level, t = self.level, self.t
        if resume and store[i_t] and not self.unlimited:
            level, t = max(0, min(self.cap, store[i_level] - self.cost)), store[i_t]
        self._s, self._il, self._it = store, i_level, i_t
        store[i_t] = t
        store[i_level] = level

    def configure(self, rate_per_s: float, burst: int) -> None:
        """Change rate and burst, keeping the level in tokens (clamped to the new burst)."""
        if rate_per_s < 0 or burst < 0:
            raise ValueError(f"rate and burst must be >= 0, got {rate_per_s}, {burst}")
        old_cost = self.cost
        frac = Fraction(rate_per_s).limit_denominator(1_000_000)
        self.unlimited = frac == 0
        self.per_ns = frac.numerator
        self.cost = NS * frac.denominator
        self.cap = burst * self.cost
        if old_cost:
            self.level = min(self.cap, self.level * self.cost // old_cost)

    def ready(self, now_ns: int) -> bool:
        """Refill up to now; is there a token? (Takes nothing.)"""
        if self.unlimited:
            return True
        s, il, it = self._s, self._il, self._it
        elapsed = now_ns - s[it]
        if elapsed > 0:
            level = s[il] + elapsed * self.per_ns
            s[it] = now_ns  # the time first: a process killed between the two stores leaves
            s[il] = level if level < self.cap else self.cap  # a bucket refilled less, not twice
        return s[il] >= self.cost

    def consume(self) -> None:
        """Spend the token `ready` found."""
        if not self.unlimited:
            self._s[self._il] -= self.cost

    def take(self, now_ns: int) -> bool:
        if self.ready(now_ns):
            self.consume()
            return True
        return False

    def tokens(self, now_ns: int) -> float:
        """The level in tokens (for status and tests; not the hot path)."""
        self.ready(now_ns)
        return float("inf") if self.unlimited else self.level / self.cost


class RiskEngine:
    """The checks above for `n_strategies` strategies (numbered 0..n-1) and the instance.

    `rejects[reason]` counts refused orders by RejectReason (and `rejects[DAILY_LOSS]` the
    loss trips); `accepted` counts the orders that passed. Both are plain ints, for export."""

    __slots__ = ("limits", "kill_switch", "rejects", "accepted", "buckets", "instance_bucket",
                 "pnl", "instance_pnl", "_max_qty", "_max_pos", "_max_working", "_band_ticks",
                 "_band_ppm", "_loss")

    def __init__(self, limits: RiskLimits, n_strategies: int):
        self.kill_switch = False
        self.rejects = [0] * (max(RejectReason) + 1)
        self.accepted = 0
        self.buckets = [TokenBucket(limits.order_rate, limits.order_burst)
                        for _ in range(n_strategies)]
        self.instance_bucket = TokenBucket(limits.instance_order_rate,
                                           limits.instance_order_burst)
        self.pnl = [0] * n_strategies  # each strategy's last reported daily net P&L
        self.instance_pnl = 0
        self._apply(limits)

    def _apply(self, limits: RiskLimits) -> None:
        # copied into slots so the hot path reads one attribute per limit, not two
        self.limits = limits
        self._max_qty = limits.max_order_qty
        self._max_pos = limits.max_position
        self._max_working = limits.max_working_orders
        self._band_ticks = limits.price_band_ticks
        self._band_ppm = round(limits.price_band_pct * _PCT_PPM)
        self._loss = limits.daily_loss_limit

    def reload(self, limits: RiskLimits) -> None:
        """Swap the limits live. Bucket levels are kept (clamped to a smaller burst), so a
        reload is never a way to get a fresh burst."""
        for b in self.buckets:
            b.configure(limits.order_rate, limits.order_burst)
        self.instance_bucket.configure(limits.instance_order_rate, limits.instance_order_burst)
        self._apply(limits)

    def pause(self) -> None:
        self.kill_switch = True

    def resume(self) -> None:
        self.kill_switch = False

    def check(self, strategy: int, instrument: int, side: int, qty: int, ord_type: int,
              price: int, last_price: int, position: int, working_same_side: int,
              working_orders: int, now_ns: int) -> int:
        """NONE if the order may go (it has then spent a rate token), else the first reason
        it may not (counted in `rejects`)."""
        r = self._reason(strategy, side, qty, ord_type, price, last_price, position,
                         working_same_side, working_orders, now_ns)
        if r:
            self.rejects[r] += 1
        else:
            self.accepted += 1
        return r

    def _reason(self, strategy, side, qty, ord_type, price, last_price, position,
                working_same_side, working_orders, now_ns):
        if self.kill_switch:
            return PAUSED
        if qty <= 0 or (side != 1 and side != -1):
            return BAD_QTY
        limit = ord_type == _LIMIT
        if limit and price <= 0:
            return BAD_PRICE
        if qty > self._max_qty:
            return MAX_ORDER_QTY
        if working_orders >= self._max_working:
            return MAX_WORKING_ORDERS
        # side * position: the position counted positive in the order's direction
        if side * position + working_same_side + qty > self._max_pos:
            return MAX_POSITION
        if limit:
            if last_price > 0:
                d = price - last_price
                if d < 0:
                    d = -d
                if self._band_ticks and d > self._band_ticks:
                    return PRICE_BAND
                if self._band_ppm and d * PPM > self._band_ppm * last_price:
                    return PRICE_BAND
        elif last_price <= 0:
            return NO_LAST_PRICE
        bucket = self.buckets[strategy]
        if not bucket.ready(now_ns):
            return ORDER_RATE
        inst = self.instance_bucket
        if not inst.ready(now_ns):
            return INSTANCE_ORDER_RATE
        bucket.consume()
        inst.consume()
        return NONE

    def on_pnl(self, strategy: int | None, net_pnl: float) -> bool:
        """Record a daily net P&L: strategy `strategy`'s (the instance figure is then the sum
        of the strategies' latest), or with None the instance's own (for a caller that sums
        itself; use one form or the other). True when this call tripped the kill switch,
        so the caller raises the alarm once."""
        if strategy is None:
            self.instance_pnl = net_pnl
        else:
            self.pnl[strategy] = net_pnl
            # summed afresh, not by deltas: float P&L (tax) would drift over a day of updates
            self.instance_pnl = sum(self.pnl)
        if self._loss and not self.kill_switch and self.instance_pnl <= -self._loss:
            self.kill_switch = True
            self.rejects[DAILY_LOSS] += 1
            return True
        return False

    def counts(self) -> dict[str, int]:
        """Reject counts by reason name, non-zero only (status and reports)."""
        return {RejectReason(i).name: n for i, n in enumerate(self.rejects) if n}
