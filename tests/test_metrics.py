"""Training metrics buffered across batches equal the metrics of all the batches at once."""
import pytest
import torch

from hvd_trainer.metrics import Accuracy, HitsAtK
from hvd_trainer.models import CategoryOutput, ModuleAdapter, NumberOutput, TensorInput
from hvd_trainer.models.batch_metrics import BatchMetrics


@pytest.mark.parametrize("k", [1, 3, 10, 12])
def test_hits_at_k_matches_topk(k):
    gen = torch.Generator().manual_seed(k)
    logits = torch.randn(5000, 10, generator=gen)
    target = torch.randint(0, 10, (5000,), generator=gen)
    metric = HitsAtK(k)
    metric.update(logits, target)
    top = logits.topk(min(k, 10), dim=-1).indices
    expected = (top == target.unsqueeze(-1)).any(-1).sum().item() / 5000
    assert metric.value(metric.stats) == pytest.approx(expected, abs=1e-12)


def _model():
    net = torch.nn.Linear(4, 7)
    return ModuleAdapter(net, [TensorInput("x", (4,))], [CategoryOutput("y", 6), NumberOutput("v", loss_weight=0.5)])


class _TwoHeads(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Linear(4, 7)

    def forward(self, x):
        out = self.body(x)
        return {"y": out[:, :6], "v": out[:, 6]}


@pytest.mark.parametrize("flush_batches,flush_elements", [(64, 1 << 22), (5, 1 << 22), (1000, 40), (1, 1)])
def test_buffered_metrics_equal_one_pass(monkeypatch, flush_batches, flush_elements):
    """Uneven batch sizes, flushes at batch counts and at the element budget: same numbers."""
    monkeypatch.setattr(BatchMetrics, "FLUSH_BATCHES", flush_batches)
    monkeypatch.setattr(BatchMetrics, "FLUSH_ELEMENTS", flush_elements)
    torch.manual_seed(0)
    model = ModuleAdapter(_TwoHeads(), [TensorInput("x", (4,))], [CategoryOutput("y", 6), NumberOutput("v", loss_weight=0.5)])
    model.reset_metrics()
    xs, ys, vs = [], [], []
    with torch.no_grad():
        for n in [13, 8, 21, 1, 30] * 20:
            x, y, v = torch.randn(n, 4), torch.randint(0, 6, (n,)), torch.randn(n)
            model.update_metrics({"y": y, "v": v}, model({"x": x}))
            xs.append(x), ys.append(y), vs.append(v)
        got = model.get_metrics()
        x, y, v = torch.cat(xs), torch.cat(ys), torch.cat(vs)
        out = model({"x": x})
    n = x.shape[0]
    ce = torch.nn.functional.cross_entropy(out["y"], y)
    mse = ((out["v"] - v) ** 2).mean()
    assert got["y"]["loss"] == pytest.approx(ce.item(), rel=1e-5)
    assert got["v"]["loss"] == pytest.approx(mse.item(), rel=1e-5)
    assert got["combined"]["loss"] == pytest.approx(ce.item() + 0.5 * mse.item(), rel=1e-5)
    assert got["y"]["accuracy"] == pytest.approx((out["y"].argmax(-1) == y).sum().item() / n)
    top3 = out["y"].topk(3, dim=-1).indices
    assert got["y"]["hits_at_k"] == pytest.approx((top3 == y.unsqueeze(-1)).any(-1).sum().item() / n)
    assert got["v"]["mean_absolute_error"] == pytest.approx((out["v"] - v).abs().mean().item(), rel=1e-5)


def test_buffer_flushes_at_element_budget(monkeypatch):
    monkeypatch.setattr(BatchMetrics, "FLUSH_ELEMENTS", 100)
    model = ModuleAdapter(torch.nn.Linear(4, 6), [TensorInput("x", (4,))], [CategoryOutput("y", 6)])
    model.reset_metrics()
    state = model._metrics_state()
    with torch.no_grad():
        for _ in range(3):  # 8 rows x 6 logits = 48 numbers each: the third batch crosses 100
            model.update_metrics({"y": torch.zeros(8, dtype=torch.long)}, model({"x": torch.randn(8, 4)}))
    assert state._combined == [] and state.metrics["y"]["accuracy"].stats[1].item() == 24


def test_accuracy_counts_every_sample():
    metric = Accuracy()
    metric.update(torch.tensor([1, 2, 3]), torch.tensor([1, 0, 3]))
    assert metric.value(metric.stats) == pytest.approx(2 / 3)
