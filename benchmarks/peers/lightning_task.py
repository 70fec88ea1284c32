"""The benchmark task in PyTorch Lightning, written the way its docs teach.

A LightningModule around the same MLP; DataLoaders over TensorDatasets (shuffle for training);
Trainer(max_epochs, accelerator="cpu", devices=1) or devices=2 with strategy="ddp" (Lightning
starts the second process itself and gives each a DistributedSampler; it also splits the cores
between the processes). The LR is multiplied by the number of processes, as every contender
does. Lightning's defaults stay on: progress bar, logger, a checkpoint each epoch, the model
summary and two sanity-check validation batches.

Run with the peers' venv (make bench-peers):
    benchmarks/.venv-peers/bin/python benchmarks/peers/lightning_task.py --task DIR/task.json --devices 2
"""
from __future__ import annotations

import argparse
import os
import sys
import time

T_PROCESS = time.time()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import task as bench  # noqa: E402


def run(task_path: str, devices: int, root_dir: str) -> None:
    import lightning as L
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    task = bench.load_task(task_path)
    bench.report_rss_at_exit(bench.env_rank)

    class MLPModule(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = bench.build_mlp(task)

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            logits = self(x)
            self.log("val_loss", F.cross_entropy(logits, y), sync_dist=True)
            self.log("val_acc", (logits.argmax(-1) == y).float().mean(), sync_dist=True)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=task["learning_rate"] * self.trainer.world_size)

    class Timing(L.Callback):
        """First step, time in validation (and the checkpoint after it), end of training."""

        def __init__(self):
            self.t_first_step = self.t_end = self.t_val = self.t_epoch = None
            self.eval_s = 0.0
            self.epoch_train_s = []

        def on_train_start(self, trainer, module):
            self.t_first_step = time.time()

        def on_train_epoch_start(self, trainer, module):
            self.t_epoch = time.time()

        def on_validation_start(self, trainer, module):
            if not trainer.sanity_checking:
                self.t_val = time.time()
                if self.t_epoch is not None:  # Lightning 2.x validates before the epoch's end hooks
                    self.epoch_train_s.append(self.t_val - self.t_epoch)
                    self.t_epoch = None

        def on_train_epoch_end(self, trainer, module):
            if self.t_val is not None:
                self.eval_s += time.time() - self.t_val
                self.t_val = None
            elif self.t_epoch is not None:
                self.epoch_train_s.append(time.time() - self.t_epoch)
                self.t_epoch = None

        def on_train_end(self, trainer, module):
            self.on_train_epoch_end(trainer, module)
            self.t_end = time.time()

    t_data = time.time()
    arrays = bench.load_arrays(task)
    tensors = {s: (torch.from_numpy(x), torch.from_numpy(y)) for s, (x, y) in arrays.items()}
    data_s = time.time() - t_data
    train_loader = DataLoader(TensorDataset(*tensors["training"]), batch_size=task["batch_size"], shuffle=True)
    val_loader = DataLoader(TensorDataset(*tensors["validation"]), batch_size=task["eval_batch_size"])

    L.seed_everything(task["seed"], verbose=False)
    module = MLPModule()
    timing = Timing()
    trainer = L.Trainer(max_epochs=task["epochs"], accelerator="cpu", devices=devices,
                        strategy="ddp" if devices > 1 else "auto", callbacks=[timing], default_root_dir=root_dir)
    trainer.fit(module, train_loader, val_loader)

    if trainer.global_rank == 0:
        # Test accuracy of the final model on the whole test set, computed the same way as for
        # the bare loops (no DistributedSampler padding).
        x_test, y_test = tensors["test"]
        correct, loss, n = bench.count_correct(module.net, x_test, y_test, task["eval_batch_size"])
        val = trainer.callback_metrics.get("val_acc")
        loop_s = timing.t_end - timing.t_first_step
        bench.emit_result({
            "t_process_start": T_PROCESS, "t_first_step": timing.t_first_step, "data_s": data_s,
            "loop_s": loop_s, "eval_s": timing.eval_s, "train_s": loop_s - timing.eval_s,
            "epoch_train_s": timing.epoch_train_s,
            "steps_per_rank": trainer.global_step, "world_size": trainer.world_size, "epochs": trainer.current_epoch,
            "validation_accuracy": float(val) if val is not None else None, "test_accuracy": correct / n,
            "test_loss": loss / n, "threads": torch.get_num_threads(), "lightning": L.__version__,
        })


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", required=True, help="task.json written by benchmarks/task.py")
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--root-dir", required=True, help="Lightning's default_root_dir (logs, checkpoints)")
    a = p.parse_args()
    run(a.task, a.devices, a.root_dir)


if __name__ == "__main__":
    main()
