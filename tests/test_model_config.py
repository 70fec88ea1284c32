"""The model part of the config: Ludwig configs load unchanged; everything else is refused clearly."""
import logging

import pytest
import yaml

from hvd_trainer.errors import ConfigError
from hvd_trainer.examples import EXAMPLES, example_config_path
from hvd_trainer.features.category import CategoryInputConfig, CategoryOutputConfig
from hvd_trainer.features.number import NumberInputConfig
from hvd_trainer.model_config import ModelConfig


def minimal(**extra):
    config = {
        "input_features": [{"name": "age", "type": "number"}, {"name": "color", "type": "category"},
                           {"name": "smoker", "type": "binary"}],
        "output_features": [{"name": "label", "type": "category"}],
    }
    config.update(extra)
    return config


def with_input(feature):
    config = minimal()
    config["input_features"] = [feature]
    return config


def with_output(feature):
    config = minimal()
    config["output_features"] = [feature]
    return config


def refused(config) -> str:
    with pytest.raises(ConfigError) as info:
        ModelConfig.from_dict(config)
    return str(info.value)


# ---- what loads --------------------------------------------------------------------------------
def test_minimal_config_gets_ludwigs_defaults():
    mc = ModelConfig.from_dict(minimal())
    age, color, smoker = mc.input_features
    assert isinstance(age, NumberInputConfig) and age.column_name == "age"
    assert age.preprocessing.missing_value_strategy == "fill_with_const" and age.preprocessing.fill_value == 0.0
    assert color.encoder.type == "dense" and color.encoder.embedding_size == 50
    assert color.preprocessing.fill_value == "<UNK>" and color.preprocessing.most_common == 10000
    assert smoker.preprocessing.missing_value_strategy == "fill_with_false"
    label = mc.output_features[0]
    assert isinstance(label, CategoryOutputConfig)
    assert label.preprocessing.missing_value_strategy == "drop_row" and label.top_k == 3 and label.loss.weight == 1.0
    assert mc.combiner.type == "concat" and mc.combiner.num_fc_layers == 0 and mc.combiner.output_size == 256
    assert mc.preprocessing.split.type == "random" and mc.preprocessing.split.probabilities == (0.7, 0.1, 0.2)


LUDWIG_CONFIG = """
model_type: ecd
ludwig_version: 0.8.6
input_features:
  - name: Pclass
    type: category
    column: pclass
    preprocessing: {missing_value_strategy: fill_with_mode, lowercase: true, most_common: 100}
    encoder: {type: dense, embedding_size: 8}
  - name: Fare
    type: number
    preprocessing: {missing_value_strategy: fill_with_mean, normalization: minmax}
  - name: Sex
    type: binary
    preprocessing: {missing_value_strategy: fill_with_const, fill_value: "no"}
output_features:
  - name: Survived
    type: binary
    loss: {type: binary_weighted_cross_entropy, weight: 2.0}
    decoder: {type: regressor}
    threshold: 0.4
  - name: Class
    type: category
    top_k: 2
    loss: {weight: 0.5}
combiner:
  type: concat
  num_fc_layers: 2
  output_size: 32
  dropout: 0.2
  activation: tanh
  norm: batch
preprocessing:
  split: {type: fixed, column: fold}
  sample_ratio: 0.5
trainer: {epochs: 3}
distributed: {strategy: local}
"""


def test_a_ludwig_config_with_nested_encoders_and_losses_loads_unchanged():
    mc = ModelConfig.from_dict(yaml.safe_load(LUDWIG_CONFIG))
    pclass, fare, sex = mc.input_features
    assert pclass.column_name == "pclass" and pclass.encoder.embedding_size == 8 and pclass.preprocessing.lowercase
    assert fare.preprocessing.normalization == "minmax"
    assert sex.preprocessing.fill_value == "no"
    survived, klass = mc.output_features
    assert survived.loss.weight == 2.0 and survived.threshold == 0.4 and klass.top_k == 2
    specs = mc.combiner.layer_specs()
    assert [(s.output_size, s.activation, s.dropout, s.norm) for s in specs] == [(32, "tanh", 0.2, "batch")] * 2
    assert mc.preprocessing.split.column_name == "fold" and mc.preprocessing.sample_ratio == 0.5


def test_older_flat_encoder_and_its_settings_on_the_feature_are_accepted():
    mc = ModelConfig.from_dict(with_input({"name": "c", "type": "category", "encoder": "sparse", "embedding_size": 7}))
    enc = mc.input_features[0].encoder
    assert enc.type == "sparse" and enc.embedding_size == 7
    mc = ModelConfig.from_dict(with_input({"name": "c", "type": "category", "representation": "sparse"}))
    assert mc.input_features[0].encoder.type == "sparse"


def test_keys_of_a_rendered_ludwig_config_that_change_nothing_are_accepted():
    config = minimal(combiner={"type": "concat", "residual": False, "norm_params": None,
                               "weights_initializer": "xavier_uniform"},
                     preprocessing={"oversample_minority": None, "sample_size": None})
    config["input_features"][0].update(tied=None, proc_column="age_mZFLky")
    config["output_features"][0].update(
        loss={"type": "softmax_cross_entropy", "class_weights": None, "robust_lambda": 0, "confidence_penalty": 0},
        dependencies=[], reduce_input="sum", num_fc_layers=0,
    )
    mc = ModelConfig.from_dict(config)
    assert mc.combiner.type == "concat"


def test_older_ludwig_split_probabilities_become_a_random_split():
    mc = ModelConfig.from_dict(minimal(preprocessing={"split_probabilities": [0.8, 0.1, 0.1], "force_split": False}))
    assert mc.preprocessing.split.type == "random" and mc.preprocessing.split.probabilities == (0.8, 0.1, 0.1)


def test_combiner_fc_layers_override_num_fc_layers_and_inherit_unset_settings():
    mc = ModelConfig.from_dict(minimal(combiner={"num_fc_layers": 5, "output_size": 16, "dropout": 0.1,
                                                 "fc_layers": [{"output_size": 64, "norm": "layer"}, {"activation": "elu"}]}))
    specs = mc.combiner.layer_specs()
    assert [(s.output_size, s.activation, s.dropout, s.norm) for s in specs] == [
        (64, "relu", 0.1, "layer"), (16, "elu", 0.1, None)]


def test_config_round_trips_through_to_dict():
    mc = ModelConfig.from_dict(yaml.safe_load(LUDWIG_CONFIG))
    assert ModelConfig.from_dict(mc.to_dict()) == mc


@pytest.mark.parametrize("name", EXAMPLES)
def test_bundled_example_configs_load(name):
    with open(example_config_path(name)) as fh:
        mc = ModelConfig.from_dict(yaml.safe_load(fh))
    assert mc.input_features and mc.output_features


def test_backend_section_is_ignored_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        ModelConfig.from_dict(minimal(backend={"type": "ray"}))
    assert "backend" in caplog.text and "ignored" in caplog.text


# ---- what is refused ----------------------------------------------------------------------------
REFUSED = {
    "unknown top-level key": (minimal(input_feature=[]), ["input_feature", "Did you mean 'input_features'"]),
    "hyperopt section": (minimal(hyperopt={"goal": "minimize"}), ["hyperopt", "not supported by hvd_trainer"]),
    "llm model type": (minimal(model_type="llm"), ["model_type", "'llm'", "not supported by hvd_trainer", "ecd"]),
    "no input features": ({"output_features": [{"name": "y", "type": "number"}]}, ["no input_features"]),
    "no output features": ({"input_features": [{"name": "x", "type": "number"}]}, ["no output_features"]),
    "features not a list": (minimal(input_features={"name": "x"}), ["input_features must be a list"]),
    "feature without name": (with_input({"type": "number"}), ["input_features[0] has no name"]),
    "feature without type": (with_input({"name": "x"}), ["'x'", "has no type", "number, category, binary"]),
    "image feature": (with_input({"name": "x", "type": "image"}), ["'image'", "not supported by hvd_trainer"]),
    "typo in type": (with_input({"name": "x", "type": "numbr"}), ["'numbr'", "Did you mean 'number'"]),
    "duplicate names": (with_output({"name": "age", "type": "number"}), ["'age' appears twice", "column:"]),
    "reserved name": (with_input({"name": "__row_id__", "type": "number"}), ["reserved"]),
    "typo in preprocessing key": (with_input({"name": "x", "type": "number", "preprocessing": {"normalisation": "zscore"}}),
                                  ["normalisation", "Did you mean 'normalization'"]),
    "log1p normalization": (with_input({"name": "x", "type": "number", "preprocessing": {"normalization": "log1p"}}),
                            ["normalization", "'log1p'", "not supported by hvd_trainer", "zscore"]),
    "bfill strategy": (with_input({"name": "x", "type": "number", "preprocessing": {"missing_value_strategy": "bfill"}}),
                       ["'bfill'", "not supported by hvd_trainer", "fill_with_mean"]),
    "mean of a category": (with_input({"name": "x", "type": "category",
                                       "preprocessing": {"missing_value_strategy": "fill_with_mean"}}),
                           ["missing_value_strategy", "fill_with_mean", "fill_with_mode"]),
    "outlier strategy": (with_input({"name": "x", "type": "number", "preprocessing": {"outlier_strategy": "clip"}}),
                         ["outlier_strategy", "not supported by hvd_trainer"]),
    "dense number encoder": (with_input({"name": "x", "type": "number", "encoder": {"type": "dense"}}),
                             ["encoder.type", "not supported by hvd_trainer", "passthrough"]),
    "unknown category encoder": (with_input({"name": "x", "type": "category", "encoder": {"type": "bert"}}),
                                 ["'bert'", "dense", "onehot"]),
    "pretrained embeddings": (with_input({"name": "x", "type": "category",
                                          "encoder": {"pretrained_embeddings": "glove.txt"}}),
                              ["pretrained_embeddings", "not supported by hvd_trainer"]),
    "embedding size not a number": (with_input({"name": "x", "type": "category", "encoder": {"embedding_size": "big"}}),
                                    ["embedding_size", "'big'", "integer"]),
    "sampled softmax loss": (with_output({"name": "y", "type": "category", "loss": {"type": "sampled_softmax_cross_entropy"}}),
                             ["sampled_softmax_cross_entropy", "not supported by hvd_trainer", "softmax_cross_entropy"]),
    "negative loss weight": (with_output({"name": "y", "type": "number", "loss": {"weight": -1}}),
                             ["loss.weight", "at least 0"]),
    "top_k of zero": (with_output({"name": "y", "type": "category", "top_k": 0}), ["top_k", "at least 1"]),
    "binary constant fill without value": (with_input({"name": "b", "type": "binary",
                                                       "preprocessing": {"missing_value_strategy": "fill_with_const"}}),
                                           ["fill_value is not set"]),
    "transformer combiner": (minimal(combiner={"type": "transformer"}),
                             ["combiner.type", "'transformer'", "not supported by hvd_trainer"]),
    "tabnet adaptive entmax": (minimal(combiner={"type": "tabnet", "entmax_mode": "adaptive"}),
                               ["combiner.entmax_mode", "'adaptive'", "not supported by hvd_trainer", "sparsemax"]),
    "tabnet more shared than total blocks": (minimal(combiner={"type": "tabnet", "num_shared_blocks": 5}),
                                             ["num_shared_blocks (5)", "num_total_blocks (4)"]),
    "tabnet concat key": (minimal(combiner={"type": "tabnet", "num_fc_layers": 2}),
                          ["combiner.num_fc_layers", "num_steps"]),
    "residual combiner": (minimal(combiner={"residual": True}), ["combiner.residual", "not supported by hvd_trainer"]),
    "unknown norm": (minimal(combiner={"norm": "group"}), ["combiner.norm", "'group'", "'batch'"]),
    "negative fc layers": (minimal(combiner={"num_fc_layers": -1}), ["combiner.num_fc_layers", "at least 0"]),
    "dropout of 1.5": (minimal(combiner={"dropout": 1.5}), ["combiner.dropout", "at most"]),
    "unknown combiner key": (minimal(combiner={"output_sise": 3}), ["output_sise", "Did you mean 'output_size'"]),
    "probabilities not summing to 1": (minimal(preprocessing={"split": {"probabilities": [0.5, 0.1, 0.1]}}),
                                       ["probabilities", "add up to 1"]),
    "no training share": (minimal(preprocessing={"split": {"probabilities": [0.0, 0.5, 0.5]}}), ["training set a share of 0"]),
    "column on a random split": (minimal(preprocessing={"split": {"type": "random", "column": "fold"}}),
                                 ["split.column", "fixed"]),
    "sample ratio of zero": (minimal(preprocessing={"sample_ratio": 0}), ["sample_ratio", "greater than 0"]),
    "typo in a defaults type": (minimal(defaults={"categroy": {"encoder": {"type": "sparse"}}}),
                                ["defaults.categroy", "Did you mean 'category'"]),
    "typo in a defaults section": (minimal(defaults={"category": {"encodr": {"type": "sparse"}}}),
                                   ["defaults.category.encodr", "Did you mean 'encoder'"]),
    "typo inside defaults": (minimal(defaults={"number": {"preprocessing": {"normalisation": "zscore"}}}),
                             ["normalisation", "Did you mean 'normalization'"]),
    "hash split": (minimal(preprocessing={"split": {"type": "hash", "column": "id"}}),
                   ["'hash'", "not supported by hvd_trainer", "stratify"]),
    "stratify on a number feature": (minimal(preprocessing={"split": {"type": "stratify", "column": "age"}}),
                                     ["'age'", "number feature", "binary or category"]),
    "stratify without a column": (minimal(preprocessing={"split": {"type": "stratify"}}), ["needs split.column"]),
    "datetime without a column": (minimal(preprocessing={"split": {"type": "datetime"}}), ["needs split.column"]),
    "oversampling a number target": (minimal(preprocessing={"oversample_minority": 0.5}),
                                     ["oversample_minority", "single binary output", "class_weights"]),
    "over and undersampling": (minimal(preprocessing={"oversample_minority": 0.5, "undersample_majority": 0.5}),
                               ["oversample_minority and undersample_majority", "Keep one"]),
    "decoder fc layer typo": (with_output({"name": "y", "type": "number", "decoder": {"fc_layers": [{"output_sise": 3}]}}),
                              ["output_sise", "Did you mean 'output_size'"]),
    "robust lambda above 1": (with_output({"name": "y", "type": "binary", "loss": {"robust_lambda": 2}}),
                              ["robust_lambda", "at most 1"]),
    "sample size": (minimal(preprocessing={"sample_size": 100}), ["sample_size", "not supported by hvd_trainer"]),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_bad_config_is_refused_with_a_message_naming_the_key(case):
    config, expected = REFUSED[case]
    message = refused(config)
    for part in expected:
        assert part in message, f"{part!r} not in: {message}"
    assert "\n" not in message


def test_errors_inside_a_feature_name_the_feature():
    message = refused(with_input({"name": "height", "type": "number", "preprocessing": {"fill_valeu": 1}}))
    assert message.startswith("Input feature 'height' (input_features[0])")
    assert "Did you mean 'fill_value'" in message


def test_numeric_category_fill_value_becomes_a_string():
    mc = ModelConfig.from_dict(with_input({"name": "c", "type": "category", "preprocessing": {"fill_value": 0}}))
    assert isinstance(mc.input_features[0], CategoryInputConfig) and mc.input_features[0].preprocessing.fill_value == "0"
