"""The Bitcoin watcher: header chain, reorgs, confirmation depth, deposit events."""

from btcl2.watcher.chain import BlockRecord, ChainSource, HeaderChain, ReorgTooDeep
from btcl2.watcher.confdepth import ConfirmationView
from btcl2.watcher.events import (
    BlockConnected,
    BlockDisconnected,
    DepositConfirmed,
    DepositLike,
    DepositParser,
    DepositReorged,
    EventConsumer,
    Payment,
    WatcherEvent,
    event_to_json,
    payments_to,
)
from btcl2.watcher.watcher import Watcher

__all__ = [
    "BlockConnected",
    "BlockDisconnected",
    "BlockRecord",
    "ChainSource",
    "ConfirmationView",
    "DepositConfirmed",
    "DepositLike",
    "DepositParser",
    "DepositReorged",
    "EventConsumer",
    "HeaderChain",
    "Payment",
    "ReorgTooDeep",
    "Watcher",
    "WatcherEvent",
    "event_to_json",
    "payments_to",
]
