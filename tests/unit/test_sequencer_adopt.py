"""The first batch where the sequencer's chain and the chain replay derives from Bitcoin part."""

from types import SimpleNamespace
from typing import Any

from btcl2.sequencer.adopt import first_difference


def _chain(*tags: str) -> tuple[Any, ...]:
    return tuple(SimpleNamespace(hash=t.encode()) for t in tags)


def test_first_difference() -> None:
    derived = _chain("a", "b", "c", "d")
    cases = [
        (("a", "b", "c", "d"), None),  # the same batches
        (("a", "b"), None),  # the sequencer behind the chain: it adopts the rest
        (("a", "b", "c", "d", "e", "f"), None),  # ahead: its batches not anchored yet
        (("a", "x", "y"), 1),  # a flip-back: the chain holds another batch 1
        (("x", "y", "z", "w", "v"), 0),
        (("a", "b", "c", "x"), 3),
        ((), None),
    ]
    for own, expected in cases:
        batches = _chain(*own)
        reader = lambda n, b=batches: b[n] if n < len(b) else None  # noqa: E731
        head = len(batches) - 1 if batches else None
        assert first_difference(derived, head, reader) == expected, own
    assert first_difference((), 3, lambda n: None) is None
