"""Distributed strategies and the registry that picks one."""
from __future__ import annotations

import difflib
from typing import Callable, Dict

from hvd_trainer.distributed.base import DistributedStrategy, LocalStrategy
from hvd_trainer.distributed.launcher import LaunchInfo, detect_launcher
from hvd_trainer.errors import ConfigError


def _horovod(**kwargs) -> DistributedStrategy:
    # Imported here so that 'local' and '--help' never need Horovod installed.
    from hvd_trainer.distributed.horovod import HorovodStrategy

    return HorovodStrategy(**kwargs)


def _local(**kwargs) -> DistributedStrategy:
    return LocalStrategy()


STRATEGIES: Dict[str, Callable[..., DistributedStrategy]] = {"horovod": _horovod, "local": _local}


def init_dist_strategy(strategy: str = "auto", **kwargs) -> DistributedStrategy:
    """Build a strategy by name. 'auto' picks Horovod when a launcher started this process.

    Keyword arguments (compression, op, horovod: the distributed.horovod section) go to the
    Horovod strategy and are ignored by 'local'.
    """
    if isinstance(strategy, DistributedStrategy):
        return strategy
    if strategy == "auto":
        strategy = "horovod" if detect_launcher().is_distributed else "local"
    if strategy not in STRATEGIES:
        close = difflib.get_close_matches(str(strategy), list(STRATEGIES) + ["auto"], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"distributed.strategy is {strategy!r}, which is not a strategy hvd_trainer knows; "
            f"use one of: auto, {', '.join(STRATEGIES)}.{hint}"
        )
    return STRATEGIES[strategy](**kwargs)


__all__ = [
    "DistributedStrategy",
    "LocalStrategy",
    "LaunchInfo",
    "detect_launcher",
    "init_dist_strategy",
    "STRATEGIES",
]
