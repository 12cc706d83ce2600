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
from collections.abc import Mapping, Sequence
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


_INT64 = 2**63  # a batch keeps counts and times as int64 (what a snapshot's rows hold)


@dataclass(frozen=True)
class ParamBatch:
    """Many products' decoded parameters as arrays, row i of each being ``product_ids[i]``:
    what a reader applying thousands of values a second takes instead of a :class:`Params`
    each (:func:`decode_many` builds one in a few numpy calls; docs/PARAMS_FORMAT.md)."""

    product_ids: tuple[str, ...]
    A_inv: np.ndarray  # (k, d, d) float64
    b: np.ndarray  # (k, d) float64
    version: np.ndarray  # (k,) int64
    n: np.ndarray  # (k,) int64
    updated_at_ms: np.ndarray  # (k,) int64

    def __len__(self) -> int:
        return len(self.product_ids)

    def __getitem__(self, part: slice | np.ndarray) -> ParamBatch:
        """The rows ``part``: a slice, or an array of row indices."""
        ids = self.product_ids
        ids = ids[part] if isinstance(part, slice) else tuple(ids[j] for j in part.tolist())
        return ParamBatch(ids, self.A_inv[part], self.b[part], self.version[part],
                          self.n[part], self.updated_at_ms[part])

    @classmethod
    def empty(cls, dim: int) -> ParamBatch:
        i = np.zeros(0, dtype=np.int64)
        return cls((), np.zeros((0, dim, dim)), np.zeros((0, dim)), i, i, i)

    @classmethod
    def of(cls, params: Mapping[str, Params], dim: int) -> ParamBatch:
        """The values of ``params`` whose dimension is ``dim`` (others are left out)."""
        chosen = [(pid, p) for pid, p in params.items() if p.state.dim == dim]
        if not chosen:
            return cls.empty(dim)
        meta = np.array([(p.version, p.state.n, p.updated_at_ms) for _pid, p in chosen],
                        dtype=np.int64)
        return cls(tuple(pid for pid, _p in chosen),
                   np.stack([p.state.A_inv for _pid, p in chosen]),
                   np.stack([p.state.b for _pid, p in chosen]),
                   meta[:, 0], meta[:, 1], meta[:, 2])

    @classmethod
    def concat(cls, parts: Sequence[ParamBatch], dim: int) -> ParamBatch:
        parts = [p for p in parts if len(p)]
        if len(parts) <= 1:
            return parts[0] if parts else cls.empty(dim)
        return cls(tuple(pid for p in parts for pid in p.product_ids),
                   *(np.concatenate([getattr(p, f) for p in parts])
                     for f in ("A_inv", "b", "version", "n", "updated_at_ms")))


def _record(dim: int) -> np.dtype:
    """One value's bytes as a numpy record (packed: the same offsets as the format)."""
    return np.dtype([("magic", "S4"), ("fmt", "u1"), ("flags", "u1"), ("d", "<u2"),
                     ("version", "<u8"), ("n", "<u8"), ("ms", "<u8"),
                     ("A_inv", "<f8", (dim, dim)), ("b", "<f8", (dim,)), ("crc", "<u4")])


def decode_many(items: Sequence[tuple[str, bytes]], dim: int
                ) -> tuple[ParamBatch, list[tuple[str, str]]]:
    """Decode many values of dimension ``dim`` at once: (the batch of the valid ones, in the
    order given; ``(product_id, reason)`` of each refused one).

    Accepts exactly what :func:`decode` accepts with ``dim`` (and refuses a count or time of
    2^63 or more, which a batch's int64 cannot hold), each reason being decode's message:
    the well-formed values are checked in bulk (one record view of their joined bytes: the
    header fields, NaN and inf, ``version >= n`` compared per column; one CRC call per
    value), and any value failing a check goes through :func:`decode` for its reason. Per
    value 0.16-0.19x of decode's time, 3.5-3.9 us against 20-21 at d = 15 in batches of 64
    and 1,024 (``python -m bench --only codec``, 2026-12-03)."""
    if not 0 < dim <= MAX_DIM:
        raise CodecError(f"dimension {dim} is not in 1..{MAX_DIM}")
    size = encoded_size(dim)
    ids: list[str] = []
    blobs: list[bytes] = []
    refused: list[tuple[str, bytes]] = []
    for pid, blob in items:
        if isinstance(blob, bytes | bytearray | memoryview) and len(blob) == size:
            ids.append(pid)
            blobs.append(blob)
        else:
            refused.append((pid, blob))
    rec = np.frombuffer(b"".join(blobs), dtype=_record(dim))
    body = size - _CRC.size
    crc = np.fromiter((zlib.crc32(memoryview(b)[:body]) for b in blobs), dtype=np.uint32,
                      count=len(blobs))
    A_inv, b = rec["A_inv"], rec["b"]
    ok = ((rec["magic"] == MAGIC) & (rec["fmt"] == FORMAT_VERSION) & (rec["flags"] == 0)
          & (rec["d"] == dim) & (crc == rec["crc"]) & (rec["version"] >= rec["n"])
          & (rec["version"] < _INT64) & (rec["ms"] < _INT64)
          & np.isfinite(A_inv).all(axis=(1, 2)) & np.isfinite(b).all(axis=1))
    keep = np.flatnonzero(ok)
    if keep.size < len(ids):
        refused.extend((ids[i], blobs[i]) for i in np.flatnonzero(~ok).tolist())
        ids = [ids[i] for i in keep.tolist()]
        rec = rec[keep]
    errors = []
    for pid, blob in refused:
        try:
            decode(blob, dim)
        except CodecError as exc:
            errors.append((pid, str(exc)))
        else:  # decode's checks passed: the int64 bound is the one the bulk check adds
            errors.append((pid, "a count or time of 2^63 or more (a batch holds int64)"))
    batch = ParamBatch(tuple(ids), rec["A_inv"].copy(), rec["b"].copy(),
                       rec["version"].astype(np.int64), rec["n"].astype(np.int64),
                       rec["ms"].astype(np.int64))
    return batch, errors


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
