"""Run every DistributedStrategy method on every rank and record what each returned.

Launched by tests/test_strategy.py under horovodrun (Gloo and MPI), plain mpirun, and
in-process with LocalStrategy. Writes <out_dir>/rank<R>.json; the test asserts on them.
Expected values are written as functions of the world size, so one worker serves size 1 and 2.
"""
import json
import os
import sys
import time

import torch

from hvd_trainer.config import TrainerConfig
from hvd_trainer.distributed import init_dist_strategy
from hvd_trainer.optimizers import create_optimizer


def linear_model(seed):
    torch.manual_seed(seed)
    return torch.nn.Linear(4, 1)


def rank_batch(rank, b=3):
    g = torch.Generator().manual_seed(100 + rank)
    return torch.randn(b, 4, generator=g), torch.randn(b, 1, generator=g)


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).tolist()


def sgd_config(accum=1):
    return TrainerConfig.from_dict({"optimizer": {"type": "sgd"}, "gradient_accumulation_steps": accum, "batch_size": 3})


def one_step_distributed(strategy, accum=1, compression_strategy=None):
    """One SGD step where rank r's data is rank_batch(r); with accum, two half-batches."""
    s = compression_strategy or strategy
    model = linear_model(0)
    config = sgd_config(accum)
    opt = s.wrap_optimizer(create_optimizer(model, config.optimizer, 0.1), model,
                           config.gradient_accumulation_steps_resolved())
    x, y = rank_batch(s.rank(), b=4)
    chunks = [(x, y)] if accum == 1 else [(x[:2], y[:2]), (x[2:], y[2:])]
    for cx, cy in chunks:
        loss = torch.nn.functional.mse_loss(model(cx), cy) / accum
        s.backward(loss, model)
    s.wait_optimizer_synced(opt)
    with s.prepare_optimizer_update(opt):
        s.step(opt)
    s.zero_grad(opt)
    return flat(model)


def one_step_reference(size):
    """The same step in one process, on all ranks' data concatenated."""
    model = linear_model(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    xs, ys = zip(*(rank_batch(r, b=4) for r in range(size)))
    loss = torch.nn.functional.mse_loss(model(torch.cat(xs)), torch.cat(ys))
    loss.backward()
    opt.step()
    return flat(model)


def main(strategy_name, out_dir):
    s = init_dist_strategy(strategy_name)
    r, n = s.rank(), s.size()
    res = {"rank": r, "size": n, "local_rank": s.local_rank(), "local_size": s.local_size(),
           "is_coordinator": s.is_coordinator(), "name": s.name}

    v = torch.tensor([float(r + 1), 10.0 * (r + 1)])
    res["allreduce_average"] = s.allreduce(v).tolist()
    res["allreduce_sum"] = s.allreduce(v, op="sum").tolist()
    res["allreduce_min"] = s.allreduce(v, op="min").tolist()
    res["allreduce_max"] = s.allreduce(v, op="max").tolist()
    res["broadcast"] = s.broadcast(torch.tensor([float(r), 7.0 + r])).tolist()
    nested = {"a": [1, {"b": (2, 3)}], "c": "text", "t": [0.5]} if r == 0 else None
    res["broadcast_object"] = s.broadcast_object(nested, name="checks.nested")
    res["allgather_object"] = s.allgather_object({"rank": r}, name="checks.allgather")

    # barrier: the last rank writes a file after a pause; rank 0 must see it after the barrier.
    marker = os.path.join(out_dir, "barrier_marker")
    if r == n - 1:
        time.sleep(0.5)
        with open(marker, "w") as fh:
            fh.write("x")
    s.barrier()
    res["barrier_saw_marker"] = os.path.exists(marker)

    # sync_model: each rank starts from different weights.
    model = linear_model(seed=1 + r)
    res["weights_before_sync"] = flat(model)
    s.sync_model(model)
    res["weights_after_sync"] = flat(model)
    res["rank0_initial_weights"] = flat(linear_model(seed=1))

    # sync_optimizer: only rank 0 has taken a step, so only it has Adam state.
    model = linear_model(seed=5)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    if r == 0:
        model(torch.ones(2, 4)).sum().backward()
        opt.step()
    s.sync_optimizer(opt)
    st = opt.state_dict()["state"]
    res["optimizer_state"] = {str(k): {"step": float(v["step"]), "exp_avg": v["exp_avg"].reshape(-1).tolist()} for k, v in st.items()}

    # DistributedOptimizer: averaging, accumulation, fp16 compression.
    res["step_params"] = one_step_distributed(s)
    res["step_params_accum2"] = one_step_distributed(s, accum=2)
    res["reference_params"] = one_step_reference(n)
    if s.name == "horovod":
        from hvd_trainer.distributed.horovod import HorovodStrategy

        res["step_params_fp16"] = one_step_distributed(s, compression_strategy=HorovodStrategy(compression="fp16"))

    res["return_first"] = s.return_first(lambda: ("result", r))()
    gathered = s.gather_all_tensors(torch.arange(r + 1, dtype=torch.float32) + 100 * r)
    res["gather_all_tensors"] = [g.tolist() for g in gathered]
    res["any_rank"] = s.any_rank(r == n - 1)
    res["any_rank_none"] = s.any_rank(False)

    with open(os.path.join(out_dir, f"rank{r}.json"), "w") as fh:
        json.dump(res, fh)
    s.barrier()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
