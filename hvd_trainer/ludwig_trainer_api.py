"""Names Ludwig's Trainer exposes (the seed's public API) that hvd_trainer's own loop does not need.

Kept for users who call them on a Trainer; hvd_trainer's code asks the strategy and the parts
directly. Mixed into Trainer, which provides `device`, `distributed` and `config`.
"""
from __future__ import annotations

import torch

from hvd_trainer.resume import resume_files_exist
from hvd_trainer.step import clip_grads


class LudwigTrainerAPI:
    #: Seed API: both training_progress.json and latest.ckpt exist (a warning names what is missing).
    resume_files_exist = staticmethod(resume_files_exist)

    def is_cpu_training(self) -> bool:
        """Seed API: whether training runs on the CPU."""
        return self.device == torch.device("cpu")

    def local_rank(self) -> int:
        """Seed API: this process's rank on its host."""
        return self.distributed.local_rank()

    def barrier(self) -> None:
        """Seed API: every rank meets here."""
        self.distributed.barrier()

    @property
    def return_device(self):
        """Seed API: where train() puts a returned state dict (RemoteTrainer: the CPU)."""
        return self.device

    def clip_grads(self, variables) -> None:
        """Seed API: clipglobalnorm, then clipnorm, then clipvalue, as configured."""
        clip_grads(variables, self.config)
