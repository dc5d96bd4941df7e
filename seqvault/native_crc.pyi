# Type stub of the compiled CRC kernel (seqvault/native_crc.c); crc_many.py is its caller.
import numpy as np

_Buf = bytes | bytearray | memoryview | np.ndarray

def crc_rows(buf: _Buf, n: int, length: int, out: _Buf, /) -> None: ...
def crc_ranges(buf: _Buf, starts: _Buf, lengths: _Buf, out: _Buf, /) -> None: ...
