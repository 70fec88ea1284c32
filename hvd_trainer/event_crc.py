"""TensorBoard's event checksums in C instead of pure Python.

Without TensorFlow installed, TensorBoard's record writer checksums every event twice (CRC32C
of the length header and of the payload) with a byte-by-byte Python loop: ~20 us for a
120-byte event. It runs on the writer's thread but holds the GIL, so rank 0's training loop
pays it at every logged step (~65 us per step of a small MLP measured by `make bench`: 6% of
its throughput). google-crc32c computes the same checksum in C in ~0.1 us; when its C
implementation is installed, `use_native_crc32c` puts it in place of TensorBoard's function
for the writer (readers keep theirs: they are not on a training path).
"""
from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

_MASK = 0xFFFFFFFF
_MASK_DELTA = 0xA282EAD8  # TFRecord's checksum masking (the same constant as TensorBoard's)


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC32C of `data`, computed by google-crc32c."""
    import google_crc32c

    crc = google_crc32c.value(data)
    return ((((crc >> 15) | (crc << 17)) & _MASK) + _MASK_DELTA) & _MASK


def use_native_crc32c() -> bool:
    """Make TensorBoard's event writer use the C checksum; False (nothing changed) without it."""
    try:
        import google_crc32c
        from tensorboard.summary.writer import record_writer
    except ImportError:
        return False
    if google_crc32c.implementation != "c":
        logger.debug("google-crc32c has no C implementation here; TensorBoard keeps its own checksum.")
        return False
    record_writer.masked_crc32c = masked_crc32c
    return True
