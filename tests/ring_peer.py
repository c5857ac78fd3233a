"""Writer and reader processes for the cross-process ring tests (run as scripts).

    python ring_peer.py writer RING N       write events 0..N-1 (payload = seq), blocking
    python ring_peer.py reader RING COUNTS  read forever, up to READ_BATCH events a batch:
                                            COUNTS[seq] += 1 as each event is handled, the
                                            batch committed after its last one

So COUNTS records what the reader HANDLED, committed or not: a reader killed between
handling a batch and committing it has counted events that its successor, which resumes at
the committed cursor, handles (and counts) again.
"""

import struct
import sys
import time

import numpy as np

from hftd import shm
from hftd.ring import Ring, RingReader, RingWriter

READ_BATCH = 7  # most events a reader handles before it commits


def writer(ring_name: str, n: int) -> None:
    w = RingWriter(Ring.attach(ring_name))
    seq = w.position
    while seq < n:
        room = w.claim(min(64, n - seq))
        if not room:
            time.sleep(0.0001)
            continue
        w.put_many(np.zeros(room, np.int32), 0, [struct.pack("<q", s) for s in range(seq, seq + room)])
        w.publish()
        seq += room


def reader(ring_name: str, counts_name: str) -> None:
    r = RingReader(Ring.attach(ring_name))
    mm = shm.attach_segment(counts_name)
    counts = np.ndarray((len(mm) // 8,), np.int64, mm)
    unpack = struct.Struct("<q").unpack
    while True:
        batch = r.read(lambda b: unpack(b)[0], READ_BATCH)
        for s in batch:
            counts[s] += 1  # handled
        r.commit(len(batch))
        if not batch:
            time.sleep(0.0001)


if __name__ == "__main__":
    role = sys.argv[1]
    if role == "writer":
        writer(sys.argv[2], int(sys.argv[3]))
    else:
        reader(sys.argv[2], sys.argv[3])
