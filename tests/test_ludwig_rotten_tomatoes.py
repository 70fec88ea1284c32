"""Ludwig's examples/getting_started/rotten_tomatoes.yaml (set + category + binary + number + text),
unchanged, trains under horovodrun -np 2 on a generated table with its columns, and learns.

The config below is the file's exact text in ludwig-ai/ludwig. The table (6000 rows) follows a rule
a model can learn: a review is recommended when it holds more positive than negative words, and,
on a tie, when the movie is a documentary (the set feature). Chance is the share of the larger
class (about 55%); the test asks for 15 points more on the test split, after the config's 3 epochs
(batch_size: auto picks up to 128 rows per rank on a CPU: at least 16 steps per epoch).
"""
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import yaml

from conftest import launcher_command, require_horovod, run_job

from hvd_trainer.examples.generated import movie_reviews
from hvd_trainer.model_config import ModelConfig

ROTTEN_TOMATOES_YAML = """\
input_features:
  - name: genres
    type: set
    preprocessing:
      tokenizer: comma
  - name: content_rating
    type: category
  - name: top_critic
    type: binary
  - name: runtime
    type: number
  - name: review_content
    type: text
    encoder:
      type: embed
output_features:
  - name: recommended
    type: binary
trainer:
  epochs: 3
"""
MARGIN = 0.15


def test_the_config_parses_with_ludwigs_meaning():
    mc = ModelConfig.from_dict(yaml.safe_load(ROTTEN_TOMATOES_YAML))
    genres, _, _, _, review = mc.input_features
    assert genres.preprocessing.tokenizer == "comma" and genres.encoder.type == "embed"
    assert review.encoder.type == "embed" and review.preprocessing.tokenizer == "space_punct"
    assert review.encoder.embedding_size == 256 and review.preprocessing.max_sequence_length == 256


@pytest.mark.horovod
def test_rotten_tomatoes_config_trains_unchanged_at_np2_above_chance(tmp_path):
    require_horovod()
    names, columns = movie_reviews(n=6000, seed=7)
    data = str(tmp_path / "rotten_tomatoes.csv")
    pacsv.write_csv(pa.table({n: columns[n] for n in names}), data)
    config = tmp_path / "rotten_tomatoes.yaml"
    config.write_text(ROTTEN_TOMATOES_YAML)
    positive = float(np.mean(columns["recommended"] == "True"))
    chance = max(positive, 1 - positive)

    cmd = launcher_command("gloo", 2) + ["-m", "hvd_trainer", "train", "--config", str(config), "--dataset", data,
                                         "--output-directory", str(tmp_path / "results"), "--experiment-name", "rt"]
    result = run_job(cmd, timeout=420)
    assert result.returncode == 0, result.stdout[-5000:]
    run = tmp_path / "results" / "rt_run"
    stats = json.load(open(run / "training_statistics.json"))
    epochs = [e for e, _, _ in stats["test"]["recommended"]["accuracy"]]
    accuracy = stats["test"]["recommended"]["accuracy"][-1][2]
    assert epochs[-1] == 3
    print(f"rotten_tomatoes np=2: test accuracy {accuracy:.4f}, chance {chance:.4f}")
    assert accuracy >= chance + MARGIN, (accuracy, chance)
    assert json.load(open(run / "description.json"))["world_size"] == 2
    meta = json.load(open(os.path.join(run, "model", "training_set_metadata.json")))
    assert meta["genres"]["type"] == "set" and meta["review_content"]["idx2str"][:4] == ["<EOS>", "<SOS>", "<PAD>",
                                                                                          "<UNK>"]
