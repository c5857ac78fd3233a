"""One hop between two processes: hftd's ring against multiprocessing.Queue, ZeroMQ
PUSH/PULL over ipc:// and faster-fifo, all carrying the same msgspec-encoded tick.

Throughput: the sender pushes `n` ticks as fast as the transport takes them (with its batch
API where it has one: hftd's put_many/read, faster-fifo's put_many/get_many); the receiver
decodes every one. Latency: the sender is paced at a fixed rate and stamps each tick's
t_ingest as it encodes it; the receiver records now - t_ingest. Same clock, same encoder,
same decoder for every transport.

    python -m bench.micro_ring [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import shutil
import tempfile
import time
import uuid

import msgspec
import numpy as np

from hftd import shm
from hftd.config import IdleConfig
from hftd.events import Tick
from hftd.idle import Backoff, Doorbell
from hftd.ring import Ring, RingReader, RingWriter

from .common import percentiles_us

ENC = msgspec.msgpack.Encoder()
DEC = msgspec.msgpack.Decoder(Tick)
BATCH = 256
END = b"END"


def _pool(n=4096):
    rng = np.random.default_rng(1)
    return [ENC.encode(Tick(i, time.monotonic_ns(), int(rng.integers(5)), 20000 + int(rng.integers(-50, 50)),
                            int(rng.integers(1, 10)), time.time_ns())) for i in range(n)]


def _paced(rate: float, n: int):
    """Yield how many messages are due, pacing at `rate`/s, until n have been yielded."""
    t0 = time.monotonic_ns()
    sent = 0
    while sent < n:
        due = min(int((time.monotonic_ns() - t0) * rate / 1e9) + 1, n) - sent
        if due <= 0:
            # sleep, never spin: a spinning sender would hold the GIL against the
            # transport's own threads (multiprocessing.Queue's feeder thread)
            wait = (t0 + sent * 1e9 / rate - time.monotonic_ns()) / 1e9
            time.sleep(max(wait, 0.0))
            continue
        yield due
        sent += due


# --- transports: each is (setup, send(n, rate), recv(n) -> latencies) --------------------
class HftdRing:
    name = "hftd ring"

    def __init__(self):
        self.inst = "bench" + uuid.uuid4().hex[:8]
        self.ring = Ring.create(shm.object_name(self.inst, "r"), 65536, 64)
        self.bell_name = shm.object_name(self.inst, "bell")
        shm.create_semaphore(self.bell_name).close()

    def sender(self, payloads, rate, n):
        w = RingWriter(Ring.attach(self.ring.name), shm.open_semaphore(self.bell_name))
        if rate == 0:
            i = 0
            while i < n:
                k = w.claim(min(BATCH, n - i))
                if not k:
                    os.sched_yield()
                    continue
                w.put_many(0, 0, payloads[i % 4096: i % 4096 + k] if i % 4096 + k <= 4096
                           else (payloads * 2)[i % 4096: i % 4096 + k])
                w.publish()
                i += k
            return
        for due in _paced(rate, n):
            while w.claim(due) < due:
                os.sched_yield()
            for _ in range(due):
                now = time.monotonic_ns()
                w.put(0, now, ENC.encode(Tick(0, now, 1, 20000, 1, 0)))
            w.publish()

    def receiver(self, n, record):
        r = RingReader(Ring.attach(self.ring.name))
        bell = Doorbell(shm.open_semaphore(self.bell_name), [r], IdleConfig().park_us)
        cfg = IdleConfig()
        idle = Backoff(bell, lambda: 0.0 if r.available() else None, cfg.spins, cfg.yields)
        got = 0
        lat = []
        decode = DEC.decode
        while got < n:
            evs = r.read(decode, 4096)
            if evs:
                if record:
                    now = time.monotonic_ns()
                    lat.extend(now - e.t_ingest for e in evs)
                r.commit(len(evs))
                got += len(evs)
            idle.idle(len(evs))
        return lat

    def close(self):
        self.ring.unlink()
        shm.unlink_semaphore(self.bell_name)
        self.ring.close()


class MpQueue:
    name = "multiprocessing.Queue"

    def __init__(self):
        self.q = mp.get_context("fork").Queue()

    def sender(self, payloads, rate, n):
        put = self.q.put
        if rate == 0:
            for i in range(n):
                put(payloads[i & 4095])
        else:
            for due in _paced(rate, n):
                for _ in range(due):
                    now = time.monotonic_ns()
                    put(ENC.encode(Tick(0, now, 1, 20000, 1, 0)))

    def receiver(self, n, record):
        get, decode = self.q.get, DEC.decode
        lat = []
        for _ in range(n):
            e = decode(get())
            if record:
                lat.append(time.monotonic_ns() - e.t_ingest)
        return lat

    def close(self):
        self.q.close()


class ZmqPushPull:
    name = "ZeroMQ PUSH/PULL ipc"

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="hftd-bench-")
        self.addr = f"ipc://{self.dir}/hop"

    def sender(self, payloads, rate, n):
        import zmq

        ctx = zmq.Context()
        s = ctx.socket(zmq.PUSH)
        s.connect(self.addr)
        send = s.send
        if rate == 0:
            for i in range(n):
                send(payloads[i & 4095])
        else:
            for due in _paced(rate, n):
                for _ in range(due):
                    now = time.monotonic_ns()
                    send(ENC.encode(Tick(0, now, 1, 20000, 1, 0)))
        s.close(linger=10_000)  # deliver what is queued, but never hang on a dead peer
        ctx.term()

    def receiver(self, n, record):
        import zmq

        ctx = zmq.Context()
        s = ctx.socket(zmq.PULL)
        s.setsockopt(zmq.RCVTIMEO, 10_000)  # a stuck hop is reported, not waited on forever
        s.bind(self.addr)
        self.ready.set()
        recv, decode = s.recv, DEC.decode
        lat = []
        for _ in range(n):
            try:
                e = decode(recv())
            except zmq.Again:
                break
            if record:
                lat.append(time.monotonic_ns() - e.t_ingest)
        s.close(linger=0)
        ctx.term()
        return lat

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class FasterFifo:
    name = "faster-fifo"

    def __init__(self):
        from faster_fifo import Queue

        self.q = Queue(max_size_bytes=64 * 1024 * 1024)

    def sender(self, payloads, rate, n):
        if rate == 0:
            i = 0
            while i < n:
                k = min(BATCH, n - i)
                self.q.put_many([payloads[(i + j) & 4095] for j in range(k)], timeout=10)
                i += k
        else:
            for due in _paced(rate, n):
                batch = []
                for _ in range(due):
                    now = time.monotonic_ns()
                    batch.append(ENC.encode(Tick(0, now, 1, 20000, 1, 0)))
                self.q.put_many(batch, timeout=10)

    def receiver(self, n, record):
        decode = DEC.decode
        lat = []
        got = 0
        while got < n:
            msgs = self.q.get_many(max_messages_to_get=4096, timeout=10)
            now = time.monotonic_ns()
            for m in msgs:
                e = decode(m)
                if record:
                    lat.append(now - e.t_ingest)
            got += len(msgs)
        return lat

    def close(self):
        self.q.close()


TRANSPORTS = [HftdRing, MpQueue, ZmqPushPull, FasterFifo]


def _receiver_proc(t, n, record, conn):
    t0 = None
    lat = t.receiver(n, record)
    conn.send((time.monotonic_ns(), lat))


def one_run(cls, n: int, rate: float) -> dict:
    ctx = mp.get_context("fork")
    t = cls()
    t.ready = ctx.Event()
    if cls is not ZmqPushPull:
        t.ready.set()
    a, b = ctx.Pipe(duplex=False)
    rx = ctx.Process(target=_receiver_proc, args=(t, n, rate > 0, b))
    try:
        rx.start()
        t.ready.wait(10)
        payloads = _pool()
        t0 = time.monotonic_ns()
        tx = ctx.Process(target=t.sender, args=(payloads, rate, n))
        tx.start()
        if not a.poll(120):
            return {"error": f"{cls.name}: receiver did not finish within 120 s"}
        t_end, lat = a.recv()
        tx.join(30)
        rx.join(30)
    finally:
        for p in (rx,):
            if p.is_alive():
                p.kill()
        if "tx" in locals() and tx.is_alive():
            tx.kill()
        t.close()
    secs = (t_end - t0) / 1e9
    if rate > 0 and len(lat) < n:
        return {"error": f"{cls.name}: {n - len(lat)} of {n} messages never arrived"}
    return {"msgs": n, "seconds": secs, "msgs_per_s": n / secs, "latency_us": percentiles_us(lat)}


def run(quick: bool) -> dict:
    n_tput = 300_000 if quick else 1_000_000
    dur = 1.0 if quick else 3.0
    rates = (1_000, 10_000, 100_000)
    out = {}
    for cls in TRANSPORTS:
        try:
            res = {"throughput": one_run(cls, n_tput, 0)}
            for rate in rates:
                r = one_run(cls, max(int(rate * dur), 500), rate)
                res[f"latency@{rate}"] = r.get("latency_us") or {"error": r["error"]}
            if "error" in res["throughput"]:
                res = {"error": res["throughput"]["error"]}
        except ImportError as e:
            res = {"error": f"not installed: {e}"}
        out[cls.name] = res
        print(f"  {cls.name}: {res.get('throughput', {}).get('msgs_per_s', 0):,.0f} msgs/s", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    res = run(args.quick)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    else:
        print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
