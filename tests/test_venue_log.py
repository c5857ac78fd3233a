"""The simulated venue's log (hftd.venues.sim) as the state store's companion: what a start
refuses (one line naming the file, exit 2: never a traceback, never trading on a log that is
not the one the store was kept with), and what it reads back."""

from __future__ import annotations

import os

import numpy as np
import pytest

from hftd.trading.store import StateError
from hftd.venues.sim import (RECORD_WORDS, LoggedSimVenue, check_log, main, read_log,
                             records)


def _log(path, n_orders=3) -> int:
    """A log written by the venue itself: n orders, acknowledged and filled."""
    v = LoggedSimVenue(str(path))
    for cid in range(1, n_orders + 1):
        v.submit(0, cid, 0, 1, 2, 0, 0, 0, 0)
    v.poll(0)
    v.on_trade(0, 20_000, 10, 1)
    for _ in range(2 * n_orders):
        v.take_seq()
    v.close()
    return 3 * n_orders  # N, ACK, FILL each


def test_a_log_reads_back_as_written_and_a_start_reads_only_what_it_needs(tmp_path):
    path = tmp_path / "venue.log"
    n = _log(path)
    assert check_log(str(path)) == n
    recs = list(records(str(path)))
    assert [r[0] for r in recs] == list(range(1, n + 1))
    assert [r[1] for r in recs] == ["N"] * 3 + ["E"] * 6
    full = read_log(str(path))
    assert full.last_seq == n and full.new_orders == 3 and len(full.events) == 6
    assert all(o.filled == 2 and o.ended for o in full.orders.values())
    # records: 1-3 the orders, 4-6 their ACKs, 7-9 their fills. Since 7: the records after
    # it (the fills of orders 2 and 3), and before it only those of the orders they name
    part = read_log(str(path), since=7)
    assert [e[0] for e in part.events] == [5, 6, 8, 9]  # ACK 2, ACK 3, FILL 2, FILL 3
    assert sorted(part.orders) == [2, 3] and part.last_seq == n
    assert part.orders[2].filled == 2 and part.orders[2].ended
    # `cids` names more orders to read whole (a working order, a request being handled)
    assert sorted(read_log(str(path), since=7, cids=[1]).orders) == [1, 2, 3]


def test_a_start_refuses_a_venue_log_that_is_not_a_sound_one_of_ours(tmp_path):
    path = tmp_path / "venue.log"
    n = _log(path)

    def refused(match):
        with pytest.raises(StateError, match=match) as e:
            check_log(str(path))
        assert str(path) in str(e.value) and "\n" not in str(e.value)

    os.chmod(path, 0o644)
    refused("has mode 644")
    os.chmod(path, 0o600)
    data = path.read_bytes()
    path.write_bytes(data[:1000])
    refused("not a whole number")
    path.write_bytes(os.urandom(len(data)))
    refused("corrupt")
    path.write_bytes(data)
    with pytest.raises(StateError, match="applied the venue's answers up to 12"):
        check_log(str(path), applied=12)  # shorter than the store says: another log
    assert check_log(str(path), applied=n) == n
    os.unlink(path)
    os.mkdir(path)
    refused("not a regular file")
    os.rmdir(path)
    other = tmp_path / "other"
    other.write_bytes(data)
    os.chmod(other, 0o600)
    os.symlink(other, path)
    refused("symlink")
    assert other.read_bytes() == data


def test_the_log_printer_says_what_is_wrong_in_one_line_and_survives_a_closed_pipe(
        tmp_path, capsys):
    path = tmp_path / "venue.log"
    _log(path)
    assert main([str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "1 N 0 1 0 1 2 0 0 0"
    os.chmod(path, 0o666)
    assert main([str(path)]) == 2
    assert "mode 666" in capsys.readouterr().err


def test_an_unused_tail_of_zero_records_is_not_read_as_records(tmp_path):
    """The venue maps its log a chunk at a time: the file is longer than its records."""
    path = tmp_path / "venue.log"
    n = _log(path)
    assert os.path.getsize(path) > n * RECORD_WORDS * 8
    raw = np.fromfile(path, np.int64).reshape(-1, RECORD_WORDS)
    assert (raw[n:] == 0).all() and check_log(str(path)) == n


def test_the_daemon_refuses_to_start_on_a_venue_log_that_is_not_its_stores(run_hftd, instance):
    """After a run, the log cut short (replaced by an empty one): the store beside it has
    applied answers the log does not have. `hftd run` says so in one line and exits 2."""
    from hftd import config
    from hftd.stages.executor import venue_log_path

    res = run_hftd("--ticks", "3000", "--rate", "10000", toml='[metrics]\nlisten = ""\n')
    assert res.returncode == 0, res.stderr
    cfg = config.load(overrides={"instance": instance})
    path = venue_log_path(cfg)
    assert check_log(path) > 0
    with open(path, "wb"):
        pass
    res = run_hftd("--ticks", "3000", toml='[metrics]\nlisten = ""\n')
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if "venue log" in ln]
    assert len(lines) == 1 and path in lines[0] and "not the log the store was kept" in lines[0]
    assert "Traceback" not in res.stderr


def test_a_log_with_something_past_its_end_is_refused_at_once(tmp_path):
    """Found by the second hostile review: bytes after a gap of empty records were accepted
    at start and called corrupt only when the venue had written up to them."""
    path = tmp_path / "venue.log"
    n = _log(path)
    with open(path, "r+b") as f:
        f.seek((n + 2) * RECORD_WORDS * 8)
        f.write(os.urandom(128))
    with pytest.raises(StateError, match=f"record {n + 3}, after the log's end"):
        check_log(str(path))


def test_a_record_a_kill_cut_short_is_not_read_and_is_written_over(tmp_path):
    """Found by the chaos test: an executor killed inside a record (its sequence number,
    written last, still 0) left a log every later start refused as corrupt."""
    path = tmp_path / "venue.log"
    n = _log(path)
    raw = np.memmap(path, np.int64, "r+").reshape(-1, RECORD_WORDS)
    raw[n, 1:5] = (1, 0, 7, 3)  # an N record: type, owner, cid, instrument; then the kill
    raw.flush()
    del raw
    assert check_log(str(path)) == n and read_log(str(path)).last_seq == n
    v = LoggedSimVenue(str(path), last_seq=n)
    v.cancel(0, 1, 0)  # a C record (2 fields) where the cut N record (8 fields) was
    v.close()
    assert check_log(str(path)) == n + 1
    assert list(records(str(path)))[-1] == (n + 1, "C", 0, 1)
    raw = np.fromfile(path, np.int64).reshape(-1, RECORD_WORDS)
    assert (raw[n, 4:] == 0).all()  # nothing of the cut record is left
    # more than that past the end is still refused
    with open(path, "r+b") as f:
        f.seek((n + 1) * RECORD_WORDS * 8 + 8)
        f.write((1).to_bytes(8, "little"))
        f.seek((n + 2) * RECORD_WORDS * 8 + 8)
        f.write((1).to_bytes(8, "little"))
    with pytest.raises(StateError, match="after the log's end"):
        check_log(str(path))
