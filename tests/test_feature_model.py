"""The config-driven feature model: encoders, concat combiner, decoders, losses and metrics."""
import numpy as np
import pytest
import torch
from torch import nn

from hvd_trainer.data.dataset import Dataset
from hvd_trainer.data.pipeline import load_training_data
from hvd_trainer.errors import DataError
from hvd_trainer.features.binary import BinaryOutput
from hvd_trainer.features.category import CategoryOutput, DenseEmbedding, OneHot
from hvd_trainer.features.number import NumberOutput
from hvd_trainer.model_config import ModelConfig
from hvd_trainer.models.base import BaseModel
from hvd_trainer.models.feature_model import FeatureModel, build_model, module_key


def metadata(vocab=5, classes=4):
    return {
        "x": {"type": "number", "preprocessing": {"normalization": None}}, "b": {"type": "binary"},
        "c": {"type": "category", "vocab_size": vocab, "preprocessing": {"lowercase": False, "most_common": 10000}},
        "y": {"type": "category", "vocab_size": classes, "preprocessing": {"lowercase": False, "most_common": 10000}},
        "p": {"type": "binary"}, "v": {"type": "number", "preprocessing": {"normalization": None}},
    }


def model_config(encoder=None, combiner=None, outputs=None):
    return ModelConfig.from_dict({
        "input_features": [{"name": "x", "type": "number", "preprocessing": {"normalization": None}},
                           {"name": "c", "type": "category", "encoder": encoder or {"type": "dense", "embedding_size": 6},
                            "preprocessing": {"lowercase": False, "most_common": 10000}},
                           {"name": "b", "type": "binary"}],
        "output_features": outputs or [
            {"name": "y", "type": "category", "loss": {"weight": 2.0}, "top_k": 10,
             "preprocessing": {"lowercase": False, "most_common": 10000}},
            {"name": "p", "type": "binary", "threshold": 0.3},
            {"name": "v", "type": "number", "loss": {"weight": 0.5}}],
        "combiner": combiner or {"num_fc_layers": 2, "output_size": 16},
    })


def build(**kwargs):
    torch.manual_seed(0)
    return build_model(model_config(**kwargs), metadata())


def test_forward_gives_logits_of_each_outputs_size():
    model = build()
    assert isinstance(model, FeatureModel) and isinstance(model, BaseModel)
    inputs, targets = model.create_sample_batch(7)
    out = model(inputs)
    assert out["y"].shape == (7, 4) and out["p"].shape == (7,) and out["v"].shape == (7,)
    assert inputs["c"].dtype == torch.int64 and inputs["x"].dtype == torch.float32


def test_output_features_come_from_config_and_metadata():
    model = build()
    y, p, v = (model.output_features[n] for n in ("y", "p", "v"))
    assert isinstance(y, CategoryOutput) and y.num_classes == 4 and y.loss_weight == 2.0
    assert y.top_k == 4  # clamped to the number of classes
    assert isinstance(p, BinaryOutput) and p.threshold == 0.3
    assert isinstance(v, NumberOutput) and v.loss_weight == 0.5


def test_combined_loss_is_the_weighted_sum_of_output_losses():
    model = build()
    inputs, targets = model.create_sample_batch(9)
    total, per_feature = model.eval_loss(targets, model(inputs))
    expected = 2.0 * per_feature["y"] + 1.0 * per_feature["p"] + 0.5 * per_feature["v"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    total.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("encoder, width, trainable", [
    ({"type": "dense", "embedding_size": 6}, 6, True),
    ({"type": "dense", "embedding_size": 3, "embeddings_trainable": False}, 3, False),
    ({"type": "onehot"}, 5, None),
    ({"type": "sparse"}, 5, None),
])
def test_category_encoders(encoder, width, trainable):
    model = build(encoder=encoder)
    enc = model.encoders["1_c"]
    assert enc.output_size == width
    assert isinstance(enc, DenseEmbedding if encoder["type"] == "dense" else OneHot)
    if trainable is not None:
        assert enc.embeddings.weight.requires_grad is trainable
    codes = torch.tensor([0, 4, 2])
    if encoder["type"] != "dense":
        assert enc(codes).tolist() == torch.eye(5)[codes].tolist()
    first = model.combiner.fc_stack[0][0]
    assert first.in_features == 1 + width + 1


def test_combiner_layers_follow_the_config():
    model = build(combiner={"fc_layers": [{"output_size": 12, "norm": "batch", "activation": "tanh", "dropout": 0.5},
                                          {"output_size": 8, "norm": "layer", "use_bias": False}]})
    first, second = model.combiner.fc_stack
    assert [type(m) for m in first] == [nn.Linear, nn.BatchNorm1d, nn.Tanh, nn.Dropout]
    assert [type(m) for m in second] == [nn.Linear, nn.LayerNorm, nn.ReLU]
    assert second[0].bias is None and model.combiner.output_size == 8
    assert model.decoders["0_y"].in_features == 8


def test_no_fc_layers_feeds_the_concatenation_to_the_decoders():
    model = build(combiner={"num_fc_layers": 0})
    assert model.combiner.output_size == 1 + 6 + 1
    assert model.decoders["2_v"].in_features == 8


def test_module_keys_are_valid_for_module_dicts_even_for_odd_names():
    assert module_key(0, "a.b") == "0_a_b" and module_key(3, "values") == "3_values"


def test_feature_names_with_dots_and_module_dict_method_names_work():
    cfg = ModelConfig.from_dict({"input_features": [{"name": "a.b", "type": "number"}, {"name": "values", "type": "number"}],
                                 "output_features": [{"name": "update", "type": "binary"}]})
    meta = {"a.b": {"type": "number", "preprocessing": {"normalization": "zscore"}},
            "values": {"type": "number", "preprocessing": {"normalization": "zscore"}}, "update": {"type": "binary"}}
    model = build_model(cfg, meta)
    out = model(model.create_sample_batch(3)[0])
    assert set(out) == {"update"} and out["update"].shape == (3,)


def test_same_seed_gives_the_same_weights():
    a, b = build(), build()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_metadata_that_lacks_a_feature_is_refused():
    meta = metadata()
    del meta["c"]
    with pytest.raises(DataError, match="'c' is missing"):
        build_model(model_config(), meta)


def test_model_learns_a_rule_from_preprocessed_data(tmp_path):
    """Trained on data from the pipeline, the model separates classes that depend on every input type."""
    rng = np.random.default_rng(0)
    n = 600
    x = rng.normal(10, 3, n)
    c = rng.choice(["p", "q", "r"], n)
    b = rng.choice(["yes", "no"], n)
    y = np.where((x > 10) ^ (c == "q") ^ (b == "yes"), "hi", "lo")
    path = tmp_path / "rule.csv"
    path.write_text("x,c,b,y\n" + "\n".join(f"{float(x[i])!r},{c[i]},{b[i]},{y[i]}" for i in range(n)) + "\n")
    cfg = ModelConfig.from_dict({
        "input_features": [{"name": "x", "type": "number"}, {"name": "c", "type": "category"},
                           {"name": "b", "type": "binary"}],
        "output_features": [{"name": "y", "type": "category"}],
        "combiner": {"num_fc_layers": 2, "output_size": 32},
    })
    train, _, test, meta = load_training_data(cfg, dataset=str(path), random_seed=1)
    torch.manual_seed(0)
    model = build_model(cfg, meta)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    batcher = train.initialize_batcher(32, random_seed=0)
    for epoch in range(40):
        batcher.set_epoch(epoch)
        while not batcher.last_batch():
            batch = batcher.next_batch()
            loss, _ = model.train_loss(model.target_tensors(batch, "cpu"), model(model.input_tensors(batch, "cpu")))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    model.reset_metrics()
    with torch.no_grad():
        batch = test.take(np.arange(len(test)))
        model.update_metrics(model.target_tensors(batch, "cpu"), model(model.input_tensors(batch, "cpu")))
    assert model.get_metrics()["y"]["accuracy"] > 0.9


def test_model_runs_on_a_dataset_batch_with_the_row_id_column():
    model = build()
    ds = Dataset({"x": np.zeros(4, np.float32), "c": np.array([0, 1, 4, 2]), "b": np.ones(4, np.float32),
                  "y": np.array([1, 2, 3, 0]), "p": np.zeros(4, np.float32), "v": np.ones(4, np.float32),
                  "__row_id__": np.arange(4)})
    batch = ds.take(np.arange(4))
    out = model(model.input_tensors(batch, "cpu"))
    model.update_metrics(model.target_tensors(batch, "cpu"), out)
    metrics = model.get_metrics()
    assert set(metrics) == {"y", "p", "v", "combined"} and "hits_at_k" in metrics["y"]


def test_a_prepared_dataset_batches_the_same_tensors_with_one_take():
    model = build()
    rng = np.random.default_rng(0)
    n = 50
    raw = Dataset({"x": rng.normal(size=n), "b": rng.integers(0, 2, n).astype(np.float32),
                   "c": rng.integers(0, 5, n), "y": rng.integers(0, 4, n), "p": rng.integers(0, 2, n).astype(np.float32),
                   "v": rng.normal(size=n)})
    prepared = model.prepare_dataset(raw)
    assert prepared is model.prepare_dataset(raw)  # stacked once per dataset
    assert "x" not in prepared.columns and "b" not in prepared.columns and prepared.columns["c"] is raw.columns["c"]
    index = rng.permutation(n)[:17]
    expected = model.input_tensors(raw.take(index), "cpu")
    got = model.input_tensors(prepared.take(index), "cpu")
    assert got.keys() == expected.keys()
    for k in expected:
        assert torch.equal(got[k], expected[k]), k
    with torch.no_grad():
        assert torch.equal(model(got)["y"], model(expected)["y"])
