"""Parameter codec: bit-exact round trips, the documented layout, and clear rejections."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from contract import codec, linucb


def _state(d: int = 15, seed: int = 0) -> linucb.ArmState:
    rng = np.random.default_rng(seed)
    s = linucb.init_state(d)
    for _ in range(50):
        s = linucb.update(s, rng.uniform(-1, 1, d), float(rng.uniform() < 0.3))
    return s


@pytest.mark.parametrize("d", [1, 15, 40])
def test_round_trip_is_bit_exact(d: int) -> None:
    s = _state(d)
    p = codec.decode(codec.encode(s, updated_at_ms=1_700_000_000_123))
    assert p.state.A_inv.tobytes() == s.A_inv.tobytes()
    assert p.state.b.tobytes() == s.b.tobytes()
    assert (p.state.n, p.version, p.updated_at_ms) == (50, 50, 1_700_000_000_123)


def test_golden_layout_follows_the_spec() -> None:
    """docs/PARAMS_FORMAT.md, byte by byte, for d=1 after one observation x=[1], r=1."""
    s = linucb.update(linucb.init_state(1), np.array([1.0]), 1.0)  # A = 1 + 1 -> A^-1 = 0.5
    s = linucb.add_reward(linucb.update(s, np.array([0.0]), 0.0), np.array([0.0]), 0.0)
    # A^-1 unchanged by x = 0; version 3 (three updates), n 2 (two observations)
    head = struct.pack("<HQQQ", 1, 3, 2, 42)
    body = b"LUCB" + bytes([1, 0]) + head + struct.pack("<dd", 0.5, 1.0)
    expected = body + struct.pack("<I", zlib.crc32(body))
    assert codec.encode(s, updated_at_ms=42) == expected
    assert codec.peek_version(expected) == 3


def test_truncated_value_is_rejected() -> None:
    blob = codec.encode(_state())
    for cut in (0, 10, 31, len(blob) - 1):
        with pytest.raises(codec.CodecError, match="shorter|length"):
            codec.decode(blob[:cut])


def test_every_single_bit_flip_in_the_payload_is_caught() -> None:
    blob = bytearray(codec.encode(_state(d=3)))
    for i in range(32, len(blob) - 4):  # the arrays
        for bit in (0, 7):
            bad = bytearray(blob)
            bad[i] ^= 1 << bit
            with pytest.raises(codec.CodecError, match="CRC"):
                codec.decode(bytes(bad))


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda b: b"XXXX" + b[4:], "magic"),
        (lambda b: b[:4] + bytes([9]) + b[5:], "format version 9"),
        (lambda b: b[:6] + b"\0\0" + b[8:], "d=0"),
        (lambda b: b + b"\0", "length"),
    ],
)
def test_bad_header_is_rejected(mutate, match: str) -> None:
    with pytest.raises(codec.CodecError, match=match):
        codec.decode(mutate(codec.encode(_state())))


def test_dimension_mismatch_is_rejected() -> None:
    with pytest.raises(codec.CodecError, match="dimension 15 != expected 20"):
        codec.decode(codec.encode(_state()), dim=20)


def test_not_bytes_is_rejected() -> None:
    with pytest.raises(codec.CodecError, match="expected bytes"):
        codec.decode("LUCB")  # type: ignore[arg-type]


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_a_value_with_a_good_crc_but_not_a_state_is_rejected() -> None:
    """The CRC says the bytes are those written, not that they are numbers one can rank by."""
    blob = codec.encode(_state(d=2))
    nan = _with_crc(blob[:32] + struct.pack("<d", float("nan")) + blob[40:-4])
    with pytest.raises(codec.CodecError, match="finite"):
        codec.decode(nan)
    version_below_n = _with_crc(blob[:8] + struct.pack("<Q", 1) + blob[16:-4])  # n is 50
    with pytest.raises(codec.CodecError, match="version 1 < n 50"):
        codec.decode(version_below_n)


def test_encode_and_params_refuse_what_the_format_cannot_hold() -> None:
    with pytest.raises(codec.CodecError, match="header"):
        codec.encode(_state(d=2), updated_at_ms=-1)
    with pytest.raises(codec.CodecError, match="header"):
        codec.encode(linucb.ArmState(np.eye(2), np.zeros(2), 2**64))
    with pytest.raises(codec.CodecError, match="dimension 1025"):
        codec.encode(linucb.init_state(codec.MAX_DIM + 1))
    with pytest.raises(codec.CodecError, match="updated_at_ms"):
        codec.Params(_state(d=2), -5)
    with pytest.raises(codec.CodecError, match="ArmState"):
        codec.Params(np.eye(2), 1)  # type: ignore[arg-type]


def test_encode_refuses_non_finite_arrays_written_after_construction() -> None:
    """ArmState checks its numbers once; numpy arrays can be written to later. A NaN or inf
    must still never become bytes for Redis (issue 20: a NaN A^-1 was published)."""
    for where, value in (("A_inv", float("nan")), ("b", float("inf")), ("A_inv", -np.inf)):
        s = _state(d=3)
        getattr(s, where).flat[1] = value
        with pytest.raises(codec.CodecError, match="finite"):
            codec.encode(s)
