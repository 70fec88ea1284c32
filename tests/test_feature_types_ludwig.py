"""The set, text, vector and date feature types: casting, metadata, transforms, encoders, outputs,
and the Ludwig options they refuse. (Distributed metadata: tests/test_feature_types_distributed.py.)"""
import json
from datetime import datetime

import numpy as np
import pyarrow as pa
import pytest
import torch
import yaml

from hvd_trainer.config_schema import from_dict
from hvd_trainer.data.pipeline import load_training_data
from hvd_trainer.data.preprocessing import decode_predictions
from hvd_trainer.errors import ConfigError, DataError
from hvd_trainer.examples import example_config_path, write_example_dataset
from hvd_trainer.features import feature_type
from hvd_trainer.features.date import DateEncoder, DateEncoderConfig, date_vector, parse_date
from hvd_trainer.features.reducer import Reducer
from hvd_trainer.features.set import Jaccard, SetEmbed, SetEncoderConfig, SetOutput
from hvd_trainer.features.text import TextEncoder, TextEncoderConfig, reduce_sequence
from hvd_trainer.features.tokens import tokenize
from hvd_trainer.features.vector import VectorOutput
from hvd_trainer.model_config import ModelConfig
from hvd_trainer.models.feature_model import build_model

ROWS = np.arange(10)


def feature(kind, ftype, **sections):
    """The parsed config of one feature named f (input by default)."""
    f = {"name": "f", "type": ftype, **sections}
    other = {"name": "o", "type": "number"}
    raw = {"input_features": [f] if kind == "input" else [other],
           "output_features": [f] if kind == "output" else [other]}
    mc = ModelConfig.from_dict(raw)
    return (mc.input_features if kind == "input" else mc.output_features)[0]


def prepared(ftype, values, kind="input", **sections):
    """(config, cast values, metadata) of one feature over `values` (one process)."""
    f = feature(kind, ftype, **sections)
    spec = feature_type(ftype)
    cast = spec.cast(pa.array(values), f, ROWS[: len(values)], "data.csv")
    counts = {}
    if spec.needs_value_counts(f):
        from collections import Counter
        present = [v for v in cast.tolist() if v is not None]
        counts = {"f": (Counter(present), len(cast) - len(present))}
    meta = spec.metadata([f], {"f": cast}, counts, Reducer())["f"]
    return f, cast, json.loads(json.dumps(meta))  # as saved and loaded


# ---- tokenizers -------------------------------------------------------------------------------------
@pytest.mark.parametrize("tokenizer, text, tokens", [
    ("space", "  a  b c ", ["a", "b", "c"]),
    ("space_punct", "Great film, isn't it?!", ["Great", "film", ",", "isn", "'", "t", "it", "?", "!"]),
    ("comma", " Action ,Drama, Sci Fi ", ["Action", "Drama", "Sci Fi"]),
    ("underscore", "a_b _c", ["a", "b", "c"]),
    ("characters", "ab c", ["a", "b", " ", "c"]),
    ("untokenized", " a b ", [" a b "]),
    ("stripped", " a b ", ["a b"]),
])
def test_tokenizers_split_as_ludwigs(tokenizer, text, tokens):
    assert tokenize(text, tokenizer, lowercase=False) == tokens


# ---- set -------------------------------------------------------------------------------------------
def test_set_vocabulary_is_unk_then_items_by_frequency_and_unseen_items_set_unk():
    f, cast, meta = prepared("set", ["b, a", "a", None, "c, a, b"], preprocessing={"tokenizer": "comma"})
    assert meta["idx2str"] == ["<UNK>", "a", "b", "c"]  # a 3, b 2, c 1; the missing row is <UNK>
    assert meta["str2freq"] == {"<UNK>": 1, "a": 3, "b": 2, "c": 1} and meta["max_set_size"] == 3
    unknown = {}
    rows = feature_type("set").transform(np.array(["a, z", None, "c"], dtype=object), meta, "f", ROWS[:3], "x",
                                         unknown)
    assert rows.tolist() == [[True, True, False, False], [True, False, False, False], [False, False, False, True]]
    assert unknown == {"f": 1}  # z


def test_set_most_common_keeps_the_most_frequent_and_ties_go_by_name():
    _, _, meta = prepared("set", ["x y", "y z", "w"], preprocessing={"most_common": 2})
    assert meta["idx2str"] == ["<UNK>", "y", "w"]  # y 2; w, x, z 1 each: w first by name


def test_set_embed_sums_the_embeddings_of_present_items():
    torch.manual_seed(0)
    enc = SetEmbed(4, SetEncoderConfig(embedding_size=3))
    x = torch.tensor([[True, False, True, False]])
    assert torch.allclose(enc(x), enc.embeddings[0] + enc.embeddings[2])
    stacked = SetEmbed(4, SetEncoderConfig(embedding_size=3, num_fc_layers=2, output_size=5))
    assert stacked(x).shape == (1, 5) and stacked.output_size == 5
    assert SetEmbed(4, SetEncoderConfig(representation="sparse"))(x).tolist() == [[1.0, 0.0, 1.0, 0.0]]


def test_set_output_loss_predictions_jaccard_and_decoding():
    out = SetOutput("f", 4, threshold=0.5)
    logits = torch.tensor([[5.0, -5.0, 5.0, -5.0], [-5.0, -5.0, -5.0, -5.0]])
    target = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    assert out.loss(logits, target).shape == (2,)
    metrics = out.create_metrics()
    out.update_metrics(metrics, logits, target)
    # row 0: {0, 2} vs {0, 2, 3} = 2/3; row 1: both empty = 1
    assert metrics["jaccard"].value(metrics["jaccard"].stats) == pytest.approx((2 / 3 + 1) / 2)
    preds = out.predictions(logits)["predictions"].numpy()
    meta = {"type": "set", "idx2str": ["<UNK>", "a", "b", "c"]}
    assert decode_predictions(meta, preds).tolist() == [["<UNK>", "b"], []]
    assert Jaccard.higher_is_better


# ---- text ------------------------------------------------------------------------------------------
def test_text_vocabulary_has_ludwigs_special_symbols_first_and_rows_are_sos_tokens_eos_padded():
    f, cast, meta = prepared("text", ["the cat sat.", "The dog", "the cat"], preprocessing={"lowercase": True})
    assert meta["idx2str"][:4] == ["<EOS>", "<SOS>", "<PAD>", "<UNK>"]
    assert meta["idx2str"][4:] == ["the", "cat", ".", "dog", "sat"]
    assert meta["max_sequence_length"] == 6 and meta["pad_idx"] == 2  # 4 tokens + <SOS> + <EOS>
    unknown = {}
    rows = feature_type("text").transform(np.array(["the bird", None], dtype=object), meta, "f", ROWS[:2], "x", unknown)
    assert rows.tolist() == [[1, 4, 3, 0, 2, 2], [1, 3, 0, 2, 2, 2]]  # bird is unseen; a missing value is <UNK>
    assert unknown == {"f": 1}


def test_text_rows_are_cut_at_max_sequence_length_and_can_pad_left():
    _, _, meta = prepared("text", ["a b c d e"], preprocessing={"max_sequence_length": 4, "padding": "left"})
    assert meta["max_sequence_length"] == 4
    rows = feature_type("text").transform(np.array(["a b c d e", "a"], dtype=object), meta, "f", ROWS[:2], "x")
    assert rows.tolist() == [[1, 4, 5, 6], [2, 1, 4, 0]]


@pytest.mark.parametrize("encoder", [{"type": "embed"}, {"type": "parallel_cnn"}, {"type": "rnn"},
                                     {"type": "rnn", "cell_type": "lstm", "bidirectional": True, "num_fc_layers": 1},
                                     {"type": "parallel_cnn", "conv_layers": [{"filter_size": 3}], "pool_size": 2,
                                      "fc_layers": [{"output_size": 7}]}])
def test_text_encoders_give_one_vector_per_row(encoder):
    torch.manual_seed(0)
    config = from_dict(TextEncoderConfig, {"embedding_size": 8, "num_filters": 4, "state_size": 6, "output_size": 5,
                                           **encoder}, "encoder")
    enc = TextEncoder(30, 2, config)
    ids = torch.randint(0, 30, (3, 9))
    out = enc(ids)
    assert out.shape == (3, enc.output_size) and torch.isfinite(out).all()
    out.sum().backward()
    expected = {"embed": 8, "parallel_cnn": 256, "rnn": 6}[encoder["type"]]
    if "fc_layers" in encoder:
        expected = 7
    elif encoder.get("num_fc_layers"):
        expected = 5
    assert enc.output_size == expected


def test_rnn_last_takes_the_last_token_that_is_not_padding():
    hidden = torch.arange(12.0).reshape(2, 3, 2)
    ids = torch.tensor([[5, 6, 2], [2, 7, 8]])  # pad 2: right-padded, left-padded
    assert reduce_sequence(hidden, ids, "last", 2).tolist() == [[2.0, 3.0], [10.0, 11.0]]


# ---- vector ----------------------------------------------------------------------------------------
def test_vector_reads_space_separated_strings_and_lists():
    _, cast, meta = prepared("vector", [" 1 2.5  -3", "4 5 6", None],
                             preprocessing={"fill_value": "0 0 1"})
    assert meta["vector_size"] == 3
    out = feature_type("vector").transform(cast, meta, "f", ROWS[:3], "x")
    assert out.dtype == np.float32 and out.tolist() == [[1, 2.5, -3], [4, 5, 6], [0, 0, 1]]
    f = feature("input", "vector")
    lists = feature_type("vector").cast(pa.array([[1.0, 2.0], None]), f, ROWS[:2], "x")
    assert lists.tolist() == [(1.0, 2.0), None]


@pytest.mark.parametrize("values, sections, message", [
    (["1 2", "1 x"], {}, "holds '1 x' in row 1"),
    (["1 2", "1 2 3"], {}, "rows of 2 to 3 numbers"),
    (["1 2", "3 4"], {"preprocessing": {"vector_size": 3}}, "rows of 2 to 2 numbers"),
    (["1 2", None], {"preprocessing": {"fill_value": "1"}}, "fill_value of the vector feature 'f' has 1 numbers"),
    (["1 2", None], {}, "is missing in row 1"),
])
def test_bad_vectors_are_refused_naming_the_row_or_setting(values, sections, message):
    with pytest.raises(DataError, match=message):
        f, cast, meta = prepared("vector", values, **sections)
        feature_type("vector").transform(cast, meta, "f", ROWS[: len(values)], "x")


def test_vector_output_is_mse_per_row_with_regression_metrics():
    out = VectorOutput("f", 2)
    logits, target = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[1.0, 4.0], [1.0, 1.0]])
    assert out.loss(logits, target).tolist() == [2.0, 1.0]
    metrics = out.create_metrics()
    out.update_metrics(metrics, logits, target)
    assert metrics["mean_squared_error"].value(metrics["mean_squared_error"].stats) == pytest.approx(1.5)
    assert decode_predictions({"type": "vector"}, logits.numpy()).tolist() == ["1 2", "0 0"]


# ---- date ------------------------------------------------------------------------------------------
def test_dates_become_ludwigs_nine_components():
    assert date_vector(parse_date("2013-02-26 13:05:07", None)) == (2013, 2, 26, 1, 57, 13, 5, 7, 47107)
    assert parse_date("26/02/2013", "%d/%m/%Y") == parse_date("2013-02-26", None)
    assert parse_date("1361836800", None) == parse_date(1361836800000, None)  # seconds and milliseconds
    f, cast, meta = prepared("date", ["2013-02-26", None], preprocessing={"fill_value": "2000-01-01"})
    out = feature_type("date").transform(cast, meta, "f", ROWS[:2], "x")
    assert out.dtype == np.int32 and out[0, :3].tolist() == [2013, 2, 26] and out[1, :3].tolist() == [2000, 1, 1]


def test_parts_a_date_leaves_out_come_from_1970_not_from_today():
    assert parse_date("2020-05", None) == datetime(2020, 5, 1)
    assert parse_date("14:30", None) == datetime(1970, 1, 1, 14, 30)


def test_missing_date_without_fill_value_is_the_epoch_on_every_rank_not_the_clock():
    _, cast, meta = prepared("date", [None, "2020-05-01"])
    assert feature_type("date").transform(cast, meta, "f", ROWS[:2], "x")[0].tolist() == [1970, 1, 1, 3, 1, 0, 0, 0, 0]


def test_a_value_that_is_not_a_date_is_refused_naming_its_row():
    with pytest.raises(DataError, match="holds 'soon' in row 1 .*datetime_format"):
        prepared("date", ["2020-01-01", "soon"])


@pytest.mark.parametrize("encoder, width", [({"type": "embed"}, 72), ({"type": "wave"}, 10),
                                            ({"type": "embed", "num_fc_layers": 2, "output_size": 4}, 4)])
def test_date_encoders(encoder, width):
    enc = DateEncoder(DateEncoderConfig(**encoder))
    x = torch.tensor([date_vector(parse_date(d, None)) for d in ("2013-12-31 23:59:59", "2020-01-01")])
    out = enc(x)
    assert out.shape == (2, width) == (2, enc.output_size) and torch.isfinite(out).all()


# ---- config --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, ftype, sections, message", [
    ("output", "text", {}, "type text is not supported as an output feature"),
    ("output", "date", {}, "type date is not supported as an output feature"),
    ("input", "text", {"preprocessing": {"tokenizer": "english_tokenize"}}, "tokenizer is 'english_tokenize': this "
                                                                             "Ludwig option is not supported"),
    ("input", "set", {"preprocessing": {"tokenizer": "hf_tokenizer"}}, "Supported values: space, space_punct"),
    ("input", "text", {"encoder": {"type": "transformer"}}, "Supported values: parallel_cnn, embed, rnn"),
    ("input", "text", {"encoder": {"type": "embed", "num_fc_layers": 2}}, "embed has no fully connected layers"),
    ("input", "text", {"encoder": {"reduce_output": "attention"}}, "reduce_output is 'attention'"),
    ("input", "text", {"preprocessing": {"vocab_file": "v.txt"}}, "vocab_file is 'v.txt'"),
    ("input", "date", {"preprocessing": {"missing_value_strategy": "bfill"}}, "bfill"),
    ("output", "vector", {"softmax": True}, "softmax is True"),
    ("output", "set", {"loss": {"type": "softmax_cross_entropy"}}, "A set output uses sigmoid_cross_entropy"),
    ("input", "set", {"encoder": {"embeding_size": 3}}, "Did you mean 'embedding_size'"),
])
def test_unsupported_options_are_refused_with_one_clear_paragraph(kind, ftype, sections, message):
    with pytest.raises(ConfigError, match=message) as e:
        feature(kind, ftype, **sections)
    assert "\n" not in str(e.value)


def test_ludwigs_rendered_keys_that_change_nothing_are_accepted():
    f = feature("input", "text", preprocessing={"vocab_file": None, "compute_idf": False, "computed_fill_value": "x"},
                encoder={"type": "rnn", "recurrent_dropout": 0.0, "pretrained_embeddings": None, "vocab": ["a"]})
    assert f.encoder.type == "rnn"
    assert feature("output", "vector", decoder={"type": "projector"}, vector_size=3).decoder.type == "projector"


# ---- the examples ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["movie_reviews", "movie_genres", "iris_vector", "daily_rentals"])
def test_new_examples_load_and_their_models_run_a_batch(tmp_path, name):
    mc = ModelConfig.from_dict(yaml.safe_load(open(example_config_path(name))))
    assert ModelConfig.from_dict(mc.to_dict()) == mc
    train, _, _, meta = load_training_data(mc, dataset=write_example_dataset(name, str(tmp_path / f"{name}.csv")))
    torch.manual_seed(0)
    model = build_model(mc, meta)
    batch = train.take(np.arange(8))
    logits = model(model.input_tensors(batch, "cpu"))
    for f in model.output_features.values():
        target = f.target_tensor(batch[f.name])
        assert torch.isfinite(f.loss(logits[f.name], target)).all()


def test_encoder_layer_lists_round_trip_through_the_saved_config():
    raw = {"input_features": [
        {"name": "t", "type": "text", "encoder": {"type": "parallel_cnn", "conv_layers": [{"filter_size": 2},
                                                                                           {"num_filters": 3}],
                                                  "fc_layers": [{"output_size": 4, "norm": "layer"}]}},
        {"name": "d", "type": "date", "encoder": {"type": "wave", "fc_layers": [{"output_size": 3}]}},
        {"name": "v", "type": "vector", "encoder": {"fc_layers": [{"output_size": 5, "dropout": 0.1}]}}],
        "output_features": [{"name": "s", "type": "set"}]}
    mc = ModelConfig.from_dict(raw)
    again = ModelConfig.from_dict(json.loads(json.dumps(mc.to_dict())))
    assert again == mc and again.input_features[0].encoder.conv_layers[1].num_filters == 3


def test_drop_row_drops_rows_missing_a_set_text_vector_or_date(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('s,t,v,d,y\n"a b",hi,1 2,2020-01-01,1\n,hi,1 2,2020-01-02,2\n"a",,1 2,2020-01-03,3\n'
                    '"a",hi,,2020-01-04,4\n"a",hi,3 4,,5\n"b",yo,5 6,2021-02-03,6\n')
    drop = {"preprocessing": {"missing_value_strategy": "drop_row"}}
    mc = ModelConfig.from_dict({
        "input_features": [{"name": n, "type": t, **drop} for n, t in
                           (("s", "set"), ("t", "text"), ("v", "vector"), ("d", "date"))],
        "output_features": [{"name": "y", "type": "number"}],
        "preprocessing": {"split": {"type": "random", "probabilities": [1.0, 0.0, 0.0]}}})
    train, _, _, meta = load_training_data(mc, dataset=str(path))
    assert sorted(train.columns["y"].tolist()) == [1.0, 6.0]
    assert meta["s"]["idx2str"] == ["<UNK>", "b", "a"] and meta["v"]["vector_size"] == 2  # b twice in kept rows
