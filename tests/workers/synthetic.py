"""Synthetic data and a small MLP shared by the trainer tests and their workers."""
import numpy as np
import torch

from hvd_trainer.data import Dataset

#: One full-batch L-BFGS step (Ludwig's lbfgs example, smaller): trainer_checks runs it at np=2, test_trainer at np=1.
LBFGS_FULL_BATCH = {"optimizer": {"type": "lbfgs", "max_iter": 20, "history_size": 10}, "batch_size": 1000,
                    "train_steps": 1, "learning_rate": 1.0, "skip_all_evaluation": True}
from hvd_trainer.models import CategoryOutput, ModuleAdapter, TensorInput

N_FEATURES, N_CLASSES = 10, 3


def classification_columns(n: int, seed: int = 0):
    """A linearly separable-ish 3-class problem: y = argmax(X @ W)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    w = np.random.default_rng(1234).normal(size=(N_FEATURES, N_CLASSES))
    return {"x": x, "y": (x @ w).argmax(1).astype(np.int64)}


def datasets(n_train=480, n_val=101, n_test=120):
    return (Dataset(classification_columns(n_train, 0), name="training"),
            Dataset(classification_columns(n_val, 1), name="validation"),
            Dataset(classification_columns(n_test, 2), name="test"))


def mlp_model(seed: int = 0, hidden: int = 16, dropout: float = 0.0):
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(N_FEATURES, hidden), torch.nn.ReLU()]
    if dropout:
        layers.append(torch.nn.Dropout(dropout))
    layers.append(torch.nn.Linear(hidden, N_CLASSES))
    return ModuleAdapter(torch.nn.Sequential(*layers), [TensorInput("x", (N_FEATURES,))], [CategoryOutput("y", N_CLASSES)])


def flat_params(model) -> list:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).tolist()
