"""Load data on every rank of a real Horovod job and record what each rank got.

Launched by tests/test_data_pipeline.py under horovodrun (Gloo and MPI):

  data_checks.py load <spec.json> <out_dir>      sharded loads of each source; writes rank<R>.json
                                                 and each source's training_set_metadata.json
  data_checks.py bad <spec.json> <out_dir>       each scenario must fail alike on every rank;
                                                 then one good load proves the ranks are still in step
  data_checks.py uncaught <spec.json> <out_dir>  one bad load, not caught: the job must exit non-zero

spec.json: {"config": {...}, "sources": {name: {kwargs of load_training_data}},
            "scenarios": {name: {"config": {...}, "kwargs": {...}}}}
"""
import json
import os
import sys
import time

from hvd_trainer.data.pipeline import ROW_ID, load_training_data
from hvd_trainer.data.preprocessing import save_metadata
from hvd_trainer.distributed import init_dist_strategy
from hvd_trainer.errors import HvdTrainerError
from hvd_trainer.model_config import ModelConfig


def dataset_record(ds):
    if ds is None:
        return None
    return {"sharded": ds.sharded, "row_ids": ds.columns[ROW_ID].tolist(),
            "columns": {k: v.tolist() for k, v in ds.columns.items() if k != ROW_ID}}


def load(strategy, spec, out_dir):
    mc = ModelConfig.from_dict(spec["config"])
    record = {"rank": strategy.rank(), "size": strategy.size(), "sources": {}}
    for name, kwargs in spec["sources"].items():
        train, val, test, metadata = load_training_data(mc, strategy, **kwargs)
        path = save_metadata(metadata, os.path.join(out_dir, name), strategy)
        record["sources"][name] = {
            "training": dataset_record(train), "validation": dataset_record(val), "test": dataset_record(test),
            "metadata": metadata, "metadata_path": path,
        }
    strategy.barrier()
    return record


def bad(strategy, spec, out_dir):
    record = {"rank": strategy.rank(), "errors": {}, "elapsed": {}}
    for name, scenario in spec["scenarios"].items():
        start = time.time()
        try:
            load_training_data(ModelConfig.from_dict(scenario["config"]), strategy, **scenario["kwargs"])
            record["errors"][name] = None
        except HvdTrainerError as e:
            record["errors"][name] = [type(e).__name__, str(e)]
        record["elapsed"][name] = time.time() - start
    # After every refusal the ranks must still be in step: a good load still works.
    train, _, _, _ = load_training_data(ModelConfig.from_dict(spec["config"]), strategy, **spec["good"])
    record["good_rows"] = len(train)
    return record


def uncaught(strategy, spec, out_dir):
    scenario = spec["uncaught"]
    try:
        load_training_data(ModelConfig.from_dict(scenario["config"]), strategy, **scenario["kwargs"])
    except HvdTrainerError as e:
        with open(os.path.join(out_dir, f"rank{strategy.rank()}.json"), "w") as fh:
            json.dump({"rank": strategy.rank(), "error": str(e)}, fh)
        raise
    return {"rank": strategy.rank(), "error": None}


def main(mode, spec_path, out_dir):
    strategy = init_dist_strategy("horovod")
    with open(spec_path) as fh:
        spec = json.load(fh)
    record = {"load": load, "bad": bad, "uncaught": uncaught}[mode](strategy, spec, out_dir)
    with open(os.path.join(out_dir, f"rank{strategy.rank()}.json"), "w") as fh:
        json.dump(record, fh)


if __name__ == "__main__":
    main(*sys.argv[1:4])
