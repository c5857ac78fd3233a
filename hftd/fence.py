"""A full memory fence, for the two places a ring needs one (hftd.ring, hftd.idle).

x86-64 keeps stores in order and loads in order, but lets a load pass an earlier store to
another address (store-load reordering). A doorbell handshake is exactly that pattern on
both sides: the reader raises its asleep flag and then loads the write cursor; the writer
stores the write cursor and then loads the asleep flag. Without a fence between each store
and load, both may see the old value of the other's word: the reader parks on a cursor that
has moved and the writer does not ring. The same holds for a writer waiting for room and
the reader's read cursor. A park is bounded, so this was a late wake-up, never a hang; with
the fence it does not happen, and parks may be long (an idle agent costs nothing).

CPython has no fence of its own. A locked instruction is one on x86-64:
`pthread_spin_lock` (an atomic exchange) on a private lock word, released at once, through
ctypes: about 0.3 us a call.
"""

from __future__ import annotations

import ctypes

_libc = ctypes.CDLL(None, use_errno=True)
_word = ctypes.c_int(0)
if _libc.pthread_spin_init(ctypes.byref(_word), 0) != 0:  # pragma: no cover
    raise OSError(ctypes.get_errno(), "pthread_spin_init failed")
_lock, _unlock, _ref = _libc.pthread_spin_lock, _libc.pthread_spin_unlock, ctypes.byref(_word)


def full_fence() -> None:
    """No load after this call is performed before a store made before it."""
    _lock(_ref)
    _unlock(_ref)
