"""The cost of an email address's key, against the plain trim, lower-case and pattern check it
replaced, measured in the same run, in process (no server): per call for addresses that come
back check after check (the key is cached), and for addresses each seen once.

    .venv/bin/python -m bench.address_bench
"""

from __future__ import annotations

import re
import timeit
from collections.abc import Callable

from dnd_server.domain.addresses import MAX_ADDRESS_LENGTH, normalize_address
from dnd_server.domain.model import Channel

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def baseline(raw: str) -> str:
    """The key before: trimmed, lower-cased, checked against a pattern."""
    text = raw.strip().lower()
    if len(text) > MAX_ADDRESS_LENGTH or not _EMAIL.match(text):
        raise ValueError(raw)
    return text


def key(raw: str) -> str:
    return normalize_address(Channel.EMAIL, raw)


def per_call(fn: Callable[[str], str], addresses: list[str], rounds: int) -> float:
    seconds = timeit.timeit(lambda: [fn(a) for a in addresses], number=rounds)
    return seconds / (rounds * len(addresses))


def main() -> None:
    repeated = [f"user{i}@Example{i % 50}.com" for i in range(1000)]
    rows = []
    for name, fn in (("baseline", baseline), ("key", key)):
        hot = per_call(fn, repeated, 200)
        fresh = per_call(fn, [f"once{i}-{name}@Example{i % 50}.COM" for i in range(100_000)], 1)
        rows.append((name, hot, fresh))
    (_, base_hot, base_fresh), (_, key_hot, key_fresh) = rows
    print(f"{'':10} {'repeated µs':>12} {'each new µs':>12}")
    for name, hot, fresh in rows:
        print(f"{name:10} {hot * 1e6:12.2f} {fresh * 1e6:12.2f}")
    print(f"{'ratio':10} {key_hot / base_hot:11.2f}x {key_fresh / base_fresh:11.2f}x")
    print("(a CheckSend that reads the database costs about 200 µs of server CPU: docs/scaling.md)")


if __name__ == "__main__":
    main()
