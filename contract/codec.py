"""The bytes of one product's parameters in Redis (spec: docs/PARAMS_FORMAT.md).

Little-endian, fixed layout, no pickle::

    offset size  field
    0      4     magic  b"LUCB"
    4      1     format version (1)
    5      1     flags (0)
    6      2     d (uint16)
    8      8     version (uint64): updates applied; only grows
    16     8     n (uint64): observations learned
    24     8     updated_at_ms (uint64): when the job produced it
    32     8*d*d A^-1, float64, row-major
    ..     8*d   b, float64
    ..     4     CRC-32 of every byte before it

A value that is short, long, of another magic or format, whose CRC does not match, or whose
numbers are not a valid :class:`~contract.linucb.ArmState` (NaN, inf, ``version < n``) raises
:class:`CodecError`. The format version lives in the bytes, so a reader always knows what it
holds. Raw float64 keeps the round trip bit-exact and decodes with one memcpy; JSON text is
larger and slower (bench/bench_codec.py measures both in one run).

>>> from contract.linucb import init_state
>>> blob = encode(init_state(2), updated_at_ms=5)
>>> len(blob), decode(blob).state.n
(84, 0)
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from contract.errors import RtrecError
from contract.linucb import ArmState, StateError, all_finite

MAGIC = b"LUCB"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<4sBBHQQQ")
_CRC = struct.Struct("<I")
MAX_DIM = 1024


class CodecError(RtrecError, ValueError):
    """A parameter value that cannot be encoded or decoded."""


@dataclass(frozen=True)
class Params:
    """Decoded parameters of one product (checked like the bytes they come from)."""

    state: ArmState
    updated_at_ms: int

    def __post_init__(self) -> None:
        if not isinstance(self.state, ArmState):
            raise CodecError(f"state: expected an ArmState, got {type(self.state).__name__}")
        ms = self.updated_at_ms
        if isinstance(ms, bool) or not isinstance(ms, int) or not 0 <= ms < 2**64:
            raise CodecError(f"updated_at_ms: {ms!r} is not a uint64 millisecond")

    @property
    def version(self) -> int:
        return self.state.version


def encoded_size(dim: int) -> int:
    return _HEADER.size + 8 * (dim * dim + dim) + _CRC.size


def encode(state: ArmState, updated_at_ms: int = 0) -> bytes:
    """The bytes of ``state``. Its constructor checked shapes and numbers, but numpy arrays
    can be written to afterwards, so NaN and inf are refused again here: a non-finite value
    must never reach Redis, where every ranking would read it."""
    d = state.dim
    if d > MAX_DIM:
        raise CodecError(f"dimension {d} > {MAX_DIM}")
    if not all_finite(state.A_inv, state.b):
        raise CodecError("A^-1 and b must be finite: NaN or inf is never written")
    try:
        header = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, d, state.version, state.n, updated_at_ms)
    except struct.error as exc:  # a count or time beyond uint64
        raise CodecError(f"header: {exc}") from exc
    body = b"".join((
        header,
        np.ascontiguousarray(state.A_inv, dtype="<f8").tobytes(),
        np.ascontiguousarray(state.b, dtype="<f8").tobytes(),
    ))
    return body + _CRC.pack(zlib.crc32(body))


def peek_version(blob: bytes) -> int:
    """The version without decoding the arrays; raises CodecError on a bad header."""
    return _header(blob)[4]


def decode(blob: bytes, dim: int | None = None) -> Params:
    """Decode and verify one value; ``dim`` (when given) must match."""
    _magic, _fmt, _flags, d, version, n, updated_at_ms = _header(blob)
    if dim is not None and d != dim:
        raise CodecError(f"dimension {d} != expected {dim}")
    if len(blob) != encoded_size(d):
        raise CodecError(f"length {len(blob)} != {encoded_size(d)} for d={d} (truncated?)")
    (crc,) = _CRC.unpack_from(blob, len(blob) - _CRC.size)
    if zlib.crc32(memoryview(blob)[: len(blob) - _CRC.size]) != crc:
        raise CodecError("CRC mismatch: the value is corrupt")
    off = _HEADER.size
    A_inv = np.frombuffer(blob, dtype="<f8", count=d * d, offset=off).reshape(d, d).copy()
    b = np.frombuffer(blob, dtype="<f8", count=d, offset=off + 8 * d * d).copy()
    try:
        state = ArmState(A_inv=A_inv, b=b, n=n, version=version)
    except StateError as exc:  # a CRC only says the bytes are those written
        raise CodecError(f"not a valid state: {exc}") from exc
    return Params(state, updated_at_ms=updated_at_ms)


def _header(blob: bytes) -> tuple[bytes, int, int, int, int, int, int]:
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise CodecError(f"expected bytes, got {type(blob).__name__}")
    if len(blob) < _HEADER.size + _CRC.size:
        raise CodecError(f"value of {len(blob)} bytes is shorter than the header")
    try:
        fields = _HEADER.unpack_from(blob, 0)
    except struct.error as exc:
        raise CodecError(f"bad header: {exc}") from exc
    magic, fmt, flags, d = fields[:4]
    if magic != MAGIC:
        raise CodecError(f"bad magic {bytes(magic)!r}, expected {MAGIC!r}")
    if fmt != FORMAT_VERSION:
        raise CodecError(f"format version {fmt} is not supported (this reader knows 1)")
    if flags != 0 or not 0 < d <= MAX_DIM:
        raise CodecError(f"bad header: flags={flags} d={d}")
    return fields
