# Type stub of the compiled segment decoder (seqvault/native_decode.c).
import numpy as np

def decode_segment(
    buf: bytes | bytearray | memoryview, col_ids: tuple[int, ...], rows: int, /
) -> tuple[bytes, int, int, int, tuple[np.ndarray | None, ...]] | str: ...
