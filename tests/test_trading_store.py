"""The executor's state store (hftd.trading.store): what it keeps survives the process and
the daemon, a fill is never half-recorded whatever instant the writer is killed at, and a
file that is not ours or not a store is refused by name."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from hftd.trading import OrdState, OrdType, TimeInForce
from hftd.trading.instruments import Contract
from hftd.trading.orders import IdSource, Order
from hftd.trading.positions import Position
from hftd.trading.store import SIZE, StateError, TradingState, key

TX = Contract("TXF", tick_size=1, multiplier=200)


def _order(cid, qty=5, price=20_000, strategy=0, instrument=0):
    return Order(cid, strategy, instrument, 1, qty, price, OrdType.LIMIT, TimeInForce.ROD, 123)


def test_ids_positions_and_orders_are_there_for_the_next_process(tmp_path):
    path = str(tmp_path / "executor.state")
    st = TradingState.open(path)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600" and os.path.getsize(path) == SIZE
    ids = IdSource(st.q, st.id_slot(3))
    assert [ids.next() for _ in range(3)] == [1, 2, 3]
    st.set_seen(3, 2)
    slot = st.position_slot("sample", "TXF")
    p = Position(TX)
    p.apply_fill(1, 2, 20_000)
    p.apply_fill(-1, 1, 20_010)
    o = _order(7)
    st.add_order(o, key("TXF"))
    o.state, o.filled, o.fill_value = OrdState.PARTIALLY_FILLED, 2, 40_000
    st.update(o, slot, p)
    st.add_order(_order(8), key("TXF"))
    st.end_order(8)
    st.close()  # no flush: a killed process does not flush either

    st = TradingState.open(path, create=False)
    assert IdSource(st.q, st.id_slot(3)).next() == 4 and st.last_seen(3) == 2
    q = Position(TX)
    st.load_position(st.position_slot("sample", "TXF"), q)
    assert (q.qty, q.avg_price, q.realized, q.volume) == (1, 20_000.0, 2_000.0, 3)
    [saved] = st.orders()
    assert (saved.client_id, saved.state, saved.filled, saved.fill_value, saved.qty,
            saved.price, saved.instrument_key) == (7, OrdState.PARTIALLY_FILLED, 2, 40_000, 5,
                                                   20_000, key("TXF"))
    [pos] = st.positions()
    assert (pos.strategy, pos.symbol, pos.qty) == ("sample", "TXF", 1)
    o.state, o.filled = OrdState.FILLED, 5
    st.update(o)
    assert st.orders() == [] and st.has_room()


def test_a_file_that_is_not_a_store_or_not_private_is_refused_by_name(tmp_path):
    bad = tmp_path / "executor.state"
    bad.write_bytes(b"x" * 100)
    os.chmod(bad, 0o600)
    with pytest.raises(StateError, match=f"{bad} is 100 bytes"):
        TradingState.open(str(bad))
    bad.write_bytes(b"\0" * SIZE)
    with pytest.raises(StateError, match="unknown header"):
        TradingState.open(str(bad))
    good = tmp_path / "good.state"
    TradingState.open(str(good)).close()
    os.chmod(good, 0o644)
    with pytest.raises(StateError, match="mode 644"):
        TradingState.open(str(good))
    link = tmp_path / "link.state"
    os.symlink(good, link)
    with pytest.raises(StateError, match="link.state"):
        TradingState.open(str(link))
    with pytest.raises(StateError, match="does not exist"):
        TradingState.open(str(tmp_path / "none.state"), create=False)


_FILLER = textwrap.dedent("""
    import sys
    from hftd.trading.instruments import Contract
    from hftd.trading.orders import Order
    from hftd.trading.positions import Position
    from hftd.trading.store import TradingState, key

    st = TradingState.open(sys.argv[1])
    slot = st.position_slot("s", "TXF")
    p = Position(Contract("TXF", tick_size=1, multiplier=200))
    st.load_position(slot, p)
    saved = st.orders()
    if saved:
        o = Order(saved[0].client_id, 0, 0, 1, saved[0].qty, 20_000)
        o.filled, o.state, o.fill_value = saved[0].filled, saved[0].state, saved[0].fill_value
    else:
        o = Order(1, 0, 0, 1, 10**12, 20_000)
        st.add_order(o, key("TXF"))
    print("ready", flush=True)
    while True:  # one lot at a time: the order's filled and the position move together
        o.filled += 1
        o.fill_value += 20_000
        o.state = 2
        p.apply_fill(1, 1, 20_000)
        st.update(o, slot, p)
""")


def test_a_fill_is_recorded_whole_or_not_at_all_whatever_instant_the_writer_dies(tmp_path):
    """A writer fills one order a lot at a time (the order's record and the position's are
    two records); it is SIGKILLed at 30 random instants and started again each time on the
    same file. The order's filled quantity and the position, read from their own records,
    always agree, and each restart continues from there."""
    path = str(tmp_path / "executor.state")
    rng = random.Random(9)
    last = 0
    for _ in range(30):
        proc = subprocess.Popen([sys.executable, "-c", _FILLER, path], stdout=subprocess.PIPE,
                                text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.0005, 0.02))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        st = TradingState.open(path, create=False)
        [o] = st.orders()
        p = Position(TX)
        st.load_position(st.position_slot("s", "TXF"), p)
        assert o.filled == p.qty == p.volume and o.fill_value == 20_000 * o.filled
        assert o.filled >= last
        last = o.filled
        st.close()
    assert last > 30  # it got somewhere between kills


def test_the_daemon_continues_client_ids_and_positions_across_runs(run_hftd, instance,
                                                                    tmp_path):
    """Two runs of one instance. The second run's ids continue the first run's: its last id
    minus the first run's equals the orders it sent (counted by the strategy), and the
    executor, which remembers every id it accepted, refused none as a duplicate. Both the
    executor and the strategy start the second run from the positions the first ended with,
    so they agree at its end."""
    runs = []
    for run in range(2):
        report = tmp_path / f"report{run}.json"
        r = run_hftd("--ticks", "4000", "--report", str(report))
        assert r.returncode == 0, r.stderr
        runs.append(json.loads(report.read_text()))
    path = os.path.join(os.environ["XDG_STATE_HOME"], "hftd", instance, "executor.state")
    last = []
    for rep in runs:
        st = TradingState.open(path, create=False)
        last.append(st.last_seen(0))
        st.close()
    first, second = runs
    sent = second["orders"]["by_strategy"]["sample"]["sent"]
    assert first["orders"]["sent"] > 0 and sent > 0
    assert second["orders"]["rejects_by_reason"].get("DUPLICATE_ORDER_ID", 0) == 0
    assert second["orders"]["acks"] == sent
    st = TradingState.open(path, create=False)
    assert st.last_issued(0) == st.last_seen(0) == first["orders"]["sent"] + sent
    saved = {p.symbol: p.qty for p in st.positions()}
    st.close()
    moved = {}
    for row in first["positions"]["rows"]:
        moved[row["symbol"]] = row["qty"]
    rows = {row["symbol"]: row for row in second["positions"]["rows"]}
    for sym, row in rows.items():
        assert row["qty"] == saved[sym] == row["strategy_view"]["qty"]
    # the second run started where the first ended: its volume is on top of the first's
    for sym, row in rows.items():
        first_row = next(r for r in first["positions"]["rows"] if r["symbol"] == sym)
        assert row["volume"] > first_row["volume"]


def test_the_daemon_refuses_to_start_over_a_working_order_it_could_not_manage(
        run_hftd, instance):
    """A crashed run left a working order in an instrument the new config does not have: the
    daemon exits 2 naming the order and the way out, and starts nothing."""
    d = os.path.join(os.environ["XDG_STATE_HOME"], "hftd", instance)
    os.makedirs(d, mode=0o700)
    st = TradingState.open(os.path.join(d, "executor.state"))
    st.position_slot("sample", "NOPE")  # its name, for the message
    st.add_order(_order(77), key("NOPE"), key("sample"))
    st.close()
    r = run_hftd("--ticks", "100")
    assert r.returncode == 2, r.stderr
    assert "working order 77 (NOPE)" in r.stderr and "not routed to strategy sample" in r.stderr
    assert "move the file away" in r.stderr and "Traceback" not in r.stderr


def test_an_order_of_a_renamed_strategy_is_not_handed_to_another(run_hftd, instance):
    """Working orders are filed by strategy index, positions by name: an order sent by
    strategy `alpha` at index 0 is refused to `sample` at index 0, naming both."""
    d = os.path.join(os.environ["XDG_STATE_HOME"], "hftd", instance)
    os.makedirs(d, mode=0o700)
    st = TradingState.open(os.path.join(d, "executor.state"))
    st.add_order(_order(78), key("TXF"), key("alpha"))
    st.close()
    r = run_hftd("--ticks", "100")
    assert r.returncode == 2, r.stderr
    assert "working order 78" in r.stderr and "another strategy than sample" in r.stderr


@pytest.mark.parametrize("where", ["a file", "under a file", "/proc"])
def test_an_unusable_state_dir_is_one_line_exit_2_and_leaves_nothing(run_hftd, instance,
                                                                    tmp_path, where):
    f = tmp_path / "afile"
    f.write_text("x")
    path = {"a file": str(f), "under a file": str(f / "sub"), "/proc": "/proc/self/hftdx"}[where]
    r = run_hftd("--ticks", "100", toml=f'state_dir = "{path}"\n')
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "state directory" in r.stderr, r.stderr
    from hftd import shm
    assert shm.leftovers(instance) == []
