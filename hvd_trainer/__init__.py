"""hvd_trainer: Ludwig's ECD trainer on a Horovod DistributedStrategy."""

__version__ = "0.1.0"
