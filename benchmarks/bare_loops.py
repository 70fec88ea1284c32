"""The limits hvd_trainer is measured against: hand-written training loops with nothing extra.

    horovod  the canonical Horovod PyTorch loop (horovod/examples/pytorch/pytorch_mnist.py):
             init -> set_num_threads -> LR x size -> broadcast -> DistributedOptimizer; each rank
             holds all rows as one tensor and takes its round-robin share of each epoch's
             permutation; validation each epoch and test at the end, averaged by allreduce.
             Run under horovodrun (np=1 or 2).
    torch    the same loop in one process with plain PyTorch (no Horovod imported).
    ddp      the same loop under torch.distributed (Gloo backend, CPU) and DistributedDataParallel,
             started by torchrun: the peer a user would pick instead of Horovod.
    threads  a scaling limit for np=2 on one machine: two threads in one process, each training
             its own replica of the model on its half of every epoch (batch and LR as one rank's),
             with no gradient exchange at all. PyTorch releases the GIL inside its kernels, so the
             two replicas compute at once; what np=2 loses against this is the cost of exchanging
             gradients (and of a second process). Test accuracy is replica 0's, trained on half
             the data without averaging: not comparable with the others.
    processes  the other limit: two processes started by torchrun, each training its own replica
             on its half of every epoch like `threads`, exchanging nothing but a barrier at the end
             of each epoch (so an epoch's time is the slower replica's) and the evaluation totals.
             Where kernels are shorter than the GIL hand-over (the small MLP), threads contend and
             this is the higher limit; test accuracy averages two unaveraged replicas: not
             comparable either.

Both read the task's Parquet files and z-score them, so their wall time covers import, data
load and preprocessing like every other contender's. Training time excludes evaluation.

usage: horovodrun -np 2 python benchmarks/bare_loops.py --kind horovod --task DIR/task.json
       python benchmarks/bare_loops.py --kind torch --task DIR/task.json
       torchrun --standalone --nproc-per-node 2 benchmarks/bare_loops.py --kind ddp --task DIR/task.json
       python benchmarks/bare_loops.py --kind threads --task DIR/task.json
       torchrun --standalone --nproc-per-node 2 benchmarks/bare_loops.py --kind processes --task DIR/task.json
"""
from __future__ import annotations

import argparse
import os
import sys
import time

T_PROCESS = time.time()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import task as bench  # noqa: E402


class _Ddp:
    """The few Horovod calls the loop makes, done with torch.distributed (Gloo) and DDP."""

    Sum = "sum"

    def __init__(self):
        import torch.distributed as dist

        dist.init_process_group("gloo")
        self.dist = dist

    def allreduce(self, tensor, op=None, name=None):
        tensor = tensor.clone()
        self.dist.all_reduce(tensor)
        return tensor


def _pin_like_hvd_trainer() -> None:
    """Each rank on its own share of the host's cores, before hvd.init(), as HorovodStrategy does."""
    from hvd_trainer.distributed.cpu_affinity import pin_to_local_share
    from hvd_trainer.distributed.launcher import detect_launcher

    launch = detect_launcher()
    pin_to_local_share(launch.local_rank, launch.local_size)


def run(kind: str, task_path: str) -> None:
    import torch

    task = bench.load_task(task_path)
    if kind == "threads":
        return run_threads(task)
    exchange = kind != "processes"  # the limit trains independent replicas
    if kind in ("ddp", "processes"):
        hvd = _Ddp()
        rank, size = hvd.dist.get_rank(), hvd.dist.get_world_size()
    elif kind == "horovod":
        import horovod.torch as hvd

        if os.environ.get("HVD_TRAINER_CPU_AFFINITY") == "1":
            _pin_like_hvd_trainer()  # a tuned run (run.py's tuned_knobs)
        if os.environ.get("BARE_LOOP_OMPI_MCA_BTL"):
            os.environ["OMPI_MCA_btl"] = os.environ["BARE_LOOP_OMPI_MCA_BTL"]  # the same: over horovodrun's -mca btl
        hvd.init()
        rank, size = hvd.rank(), hvd.size()
        if "OMP_NUM_THREADS" not in os.environ:
            # Horovod: ranks on one host share its cores (what HorovodStrategy does too).
            torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // hvd.local_size()))
    else:
        hvd, rank, size = None, 0, 1
    bench.report_rss_at_exit(lambda: rank)

    t_data = time.time()
    arrays = bench.load_arrays(task)
    x, y = (torch.from_numpy(a) for a in arrays["training"])
    x_val, y_val = (torch.from_numpy(a[rank::size]) for a in arrays["validation"])
    x_test, y_test = (torch.from_numpy(a[rank::size]) for a in arrays["test"])
    data_s = time.time() - t_data

    model = bench.build_mlp(task)
    optimizer = torch.optim.Adam(model.parameters(), lr=task["learning_rate"] * (size if exchange else 1))
    if kind == "ddp":
        # DDP broadcasts rank 0's parameters itself and averages gradients in backward.
        model = torch.nn.parallel.DistributedDataParallel(model)
    elif kind == "horovod":
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters())

    def accuracy(xs, ys):
        correct, loss, n = bench.count_correct(model, xs, ys, task["eval_batch_size"])
        totals = torch.tensor([correct, loss, float(n)], dtype=torch.float64)
        if hvd is not None:
            totals = hvd.allreduce(totals, op=hvd.Sum, name="eval_totals")
        return float(totals[0] / totals[2]), float(totals[1] / totals[2])

    batch, n = task["batch_size"], len(y)
    steps, eval_s, val_acc, epoch_train_s = 0, 0.0, None, []
    t_first_step = time.time()
    for epoch in range(task["epochs"]):
        t_epoch = time.time()
        order = torch.from_numpy(bench.epoch_order(n, task["seed"], epoch, rank, size))
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
            steps += 1
        if not exchange:
            hvd.dist.barrier()  # the epoch ends when the slower replica's does
        t_eval = time.time()
        epoch_train_s.append(t_eval - t_epoch)
        val_acc, _ = accuracy(x_val, y_val)
        eval_s += time.time() - t_eval
    loop_s = time.time() - t_first_step
    test_acc, test_loss = accuracy(x_test, y_test)
    if rank == 0:
        bench.emit_result({
            "t_process_start": T_PROCESS, "t_first_step": t_first_step, "data_s": data_s, "loop_s": loop_s,
            "eval_s": eval_s, "train_s": loop_s - eval_s, "epoch_train_s": epoch_train_s, "steps_per_rank": steps,
            "world_size": size,
            "train_rows": n, "epochs": task["epochs"], "validation_accuracy": val_acc, "test_accuracy": test_acc,
            "test_loss": test_loss, "threads": torch.get_num_threads(),
        })
    if kind in ("ddp", "processes"):
        # torch 2.13's Gloo process group leaves a C++ thread joinable at interpreter teardown: about one
        # exit in three ended with "terminate called without an active exception" (SIGABRT) after the
        # result was written, even after destroy_process_group. The measurement is done: run the exit
        # hooks (the RSS report) and leave without the C++ static destructors.
        import atexit

        hvd.dist.destroy_process_group()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def run_threads(task, replicas: int = 2) -> None:
    """Two replicas trained at once by two threads of one process, each on its half of every epoch."""
    import threading

    import torch

    torch.set_num_threads(1)  # each thread computes on itself: one core per replica
    bench.report_rss_at_exit(lambda: 0)
    t_data = time.time()
    arrays = bench.load_arrays(task)
    x, y = (torch.from_numpy(a) for a in arrays["training"])
    data_s = time.time() - t_data
    models = [bench.build_mlp(task) for _ in range(replicas)]
    optimizers = [torch.optim.Adam(m.parameters(), lr=task["learning_rate"]) for m in models]
    batch, n, steps = task["batch_size"], len(y), [0] * replicas

    def train(r: int, epoch: int) -> None:
        model, optimizer = models[r], optimizers[r]
        order = torch.from_numpy(bench.epoch_order(n, task["seed"], epoch, r, replicas))
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
            steps[r] += 1

    epoch_train_s = []
    t_first_step = time.time()
    for epoch in range(task["epochs"]):
        t_epoch = time.time()
        threads = [threading.Thread(target=train, args=(r, epoch)) for r in range(replicas)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        epoch_train_s.append(time.time() - t_epoch)
    loop_s = time.time() - t_first_step
    x_test, y_test = (torch.from_numpy(a) for a in arrays["test"])
    correct, loss, rows = bench.count_correct(models[0], x_test, y_test, task["eval_batch_size"])
    bench.emit_result({
        "t_process_start": T_PROCESS, "t_first_step": t_first_step, "data_s": data_s, "loop_s": loop_s,
        "eval_s": 0.0, "train_s": loop_s, "epoch_train_s": epoch_train_s, "steps_per_rank": steps[0],
        "world_size": replicas, "train_rows": n, "epochs": task["epochs"], "validation_accuracy": None,
        "test_accuracy": correct / rows, "test_loss": loss / rows, "threads": replicas,
    })


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", choices=("horovod", "torch", "ddp", "threads", "processes"), required=True)
    p.add_argument("--task", required=True, help="task.json written by benchmarks/task.py")
    a = p.parse_args()
    run(a.kind, a.task)


if __name__ == "__main__":
    main()
