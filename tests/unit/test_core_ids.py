"""Identifiers: 26-character ULIDs in Crockford base32, unique and increasing within a process."""

from __future__ import annotations

import re
import threading

from hypothesis import given
from hypothesis import strategies as st

from accrue.domain import ids

ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def reference_encoding(value: int, length: int) -> str:
    """Five bits per character, the plain way."""
    chars = []
    for _ in range(length):
        chars.append(ids._ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


@given(st.integers(min_value=0, max_value=2**128 - 1))
def test_the_table_encoding_matches_five_bits_per_character(value: int) -> None:
    assert ids._encode(value, 26) == reference_encoding(value, 26)
    millisecond, random_part = value >> 80, value & (2**80 - 1)
    head = ids._head(millisecond & (2**48 - 1), random_part >> 15)
    assert head + ids._TRIPLES[random_part & 0x7FFF] == reference_encoding(
        ((millisecond & (2**48 - 1)) << 80) | random_part, 26
    )


def test_ids_are_unique_across_threads_and_increase_within_one() -> None:
    made: dict[int, list[str]] = {}

    def make(thread: int) -> None:
        made[thread] = [ids.new_ulid() for _ in range(20_000)]

    threads = [threading.Thread(target=make, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [i for batch in made.values() for i in batch]
    assert len(set(everything)) == len(everything)
    assert all(batch == sorted(batch) for batch in made.values())
    assert all(ULID.match(i) for i in everything[:1000])


def test_prefixed_ids_name_their_kind() -> None:
    assert re.match(r"^txn_[0-9A-Z]{26}$", ids.new_id("txn"))


def test_a_forked_child_draws_random_bits_of_its_own() -> None:
    """Random bits come from a pool of os.urandom output: a child forked with the pool half used
    must not draw the bytes its parent draws next (two processes would make the same ids)."""
    import os

    with ids._lock:
        ids._random_80_bits()  # the pool is filled and partly used
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next draws and leave at once
        try:
            with ids._lock:
                os.write(write, b",".join(str(ids._random_80_bits()).encode() for _ in range(3)))
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = [int(v) for v in pipe.read().split(b",")]
    os.waitpid(pid, 0)
    with ids._lock:
        parent = [ids._random_80_bits() for _ in range(3)]
    assert len(child) == 3
    assert not set(child) & set(parent)
