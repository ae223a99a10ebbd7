"""Time-ordered identifiers (ULID layout: 48-bit milliseconds + 80 random bits, Crockford base32).

Sorting ids sorts by creation time, which keeps history pages and DynamoDB sort keys in order.
"""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_lock = threading.Lock()
_last_ms = 0
_last_rand = 0

# Random bytes from os.urandom, drawn a few kilobytes at a time (a system call per id cost more than
# the rest of making it); the bytes are the same kernel CSPRNG output, used once each. A forked child
# starts with an empty pool, so parent and child never share bytes.
_POOL_BYTES = 4096
_pool = b""
_pool_at = 0


def _random_80_bits() -> int:
    """80 fresh random bits; call with _lock held."""
    global _pool, _pool_at
    if _pool_at + 10 > len(_pool):
        _pool, _pool_at = os.urandom(_POOL_BYTES), 0
    start = _pool_at
    _pool_at = start + 10
    return int.from_bytes(_pool[start : start + 10], "big")


def _empty_pool() -> None:
    global _pool, _pool_at
    _pool, _pool_at = b"", 0


os.register_at_fork(after_in_child=_empty_pool)


# Three characters per 15 bits from a table: a third of the steps of one character per 5 bits
# (an id is made for every posting and event, so this is on the bulk path).
_TRIPLES = tuple(a + b + c for a in _ALPHABET for b in _ALPHABET for c in _ALPHABET)


def _encode(value: int, length: int) -> str:
    """``length`` base32 characters of ``value`` (below 32**length), most significant first."""
    chunks = []
    triples, singles = divmod(length, 3)
    for _ in range(triples):
        chunks.append(_TRIPLES[value & 0x7FFF])
        value >>= 15
    for _ in range(singles):
        chunks.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chunks))


def new_ulid() -> str:
    """A 26-character ULID, monotonic within one process."""
    global _last_ms, _last_rand
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms <= _last_ms:
            now_ms = _last_ms
            rand = _last_rand + 1
        else:
            rand = _random_80_bits()
        rand &= (1 << 80) - 1
        # Read back inside the lock: another thread may move _last_rand as soon as it is released.
        _last_ms, _last_rand = now_ms, rand
    return _head(now_ms, rand >> 15) + _TRIPLES[rand & 0x7FFF]


_last_head: tuple[int, int, str] = (-1, -1, "")


def _head(now_ms: int, high: int) -> str:
    """The first 23 characters: the millisecond and the random part but its last 15 bits.

    Ids made within one millisecond count up from one random number, so consecutive ids share
    their head: it is encoded once (bulk imports make an id per posting).
    """
    global _last_head
    last = _last_head
    if last[0] == now_ms and last[1] == high:
        return last[2]
    text = _encode(now_ms, 10) + _encode(high, 13)
    _last_head = (now_ms, high, text)
    return text


def new_id(prefix: str) -> str:
    """A prefixed, time-ordered id such as ``txn_01J9...``."""
    return f"{prefix}_{new_ulid()}"
