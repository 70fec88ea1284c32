"""Record the bytes each rank reads from a Parquet file during a real sharded load.

Launched by tests/test_sharded_reads.py under horovodrun -np 2:

  read_checks.py <file.parquet> <out_dir>     load_training_data(training_set=file) on every rank;
                                              writes rank<R>.json: every read (offset, bytes) and
                                              the row ids the rank holds

pyarrow.parquet.ParquetFile is wrapped so that it reads through a Python file object that
records each read: what the test checks is what pyarrow actually fetched from the file.
"""
import io
import json
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq

from hvd_trainer.data.pipeline import ROW_ID, load_training_data
from hvd_trainer.distributed import init_dist_strategy
from hvd_trainer.model_config import ModelConfig

READS = []


class RecordingFile(io.RawIOBase):
    def __init__(self, path):
        self._f = open(path, "rb")

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, offset, whence=0):
        return self._f.seek(offset, whence)

    def tell(self):
        return self._f.tell()

    def read(self, n=-1):
        start = self._f.tell()
        data = self._f.read(n)
        READS.append([start, len(data)])
        return data

    def readinto(self, buffer):
        start = self._f.tell()
        n = self._f.readinto(buffer)
        READS.append([start, n])
        return n

    def close(self):
        self._f.close()
        super().close()


def main(path, out_dir):
    real = pq.ParquetFile
    pq.ParquetFile = lambda source, *a, **k: real(pa.PythonFile(RecordingFile(source), mode="r"), *a, **k)
    strategy = init_dist_strategy("horovod")
    config = ModelConfig.from_dict({"input_features": [{"name": "a", "type": "number"}, {"name": "b", "type": "number"}],
                                    "output_features": [{"name": "y", "type": "category"}]})
    train, _, _, _ = load_training_data(config, strategy, training_set=path)
    record = {"rank": strategy.rank(), "reads": READS, "row_ids": train.columns[ROW_ID].tolist()}
    with open(os.path.join(out_dir, f"rank{strategy.rank()}.json"), "w") as fh:
        json.dump(record, fh)


if __name__ == "__main__":
    main(*sys.argv[1:3])
