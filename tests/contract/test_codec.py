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


def _corruptions(rng: np.random.Generator, d: int) -> list[tuple[str, bytes]]:
    """Valid values and one of each way a value can be wrong, in a seeded order."""
    good = [codec.encode(linucb.ArmState(_state(d, int(s)).A_inv, _state(d, int(s)).b, 50,
                                         version=50 + int(s)), int(s))
            for s in rng.integers(0, 1000, 6)]
    size = codec.encoded_size(d)
    body = good[0][:-4]
    A_at, b_at = 32, 32 + 8 * d * d
    nan_A = bytearray(body)
    nan_A[A_at:A_at + 8] = struct.pack("<d", float("nan"))
    inf_b = bytearray(body)
    inf_b[b_at:b_at + 8] = struct.pack("<d", float("inf"))
    behind = bytearray(body)
    behind[8:16] = struct.pack("<Q", 3)  # version 3 < n 50
    flip = bytearray(good[1])
    flip[int(rng.integers(0, size - 4))] ^= 1 << int(rng.integers(0, 8))
    bad = {
        "truncated": good[2][:-1], "long": good[2] + b"\0", "empty": b"",
        "magic": _with_crc(b"XUCB" + body[4:]), "format": _with_crc(body[:4] + b"\x02" + body[5:]),
        "flags": _with_crc(body[:5] + b"\x01" + body[6:]),
        "other_d": codec.encode(_state(d + 1 if d < 40 else d - 1)),
        "crc": bytes(flip), "nan": _with_crc(bytes(nan_A)), "inf": _with_crc(bytes(inf_b)),
        "behind": _with_crc(bytes(behind)),
    }
    items = [(f"good{i}", g) for i, g in enumerate(good)] + [(k, v) for k, v in bad.items()]
    items.append(("bytearray", bytearray(good[3])))  # what decode takes besides bytes
    return [items[i] for i in rng.permutation(len(items))]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("d", [1, 15])
def test_decode_many_accepts_and_refuses_exactly_what_decode_does(seed: int, d: int) -> None:
    """Every value decode accepts is in the batch, in the order given, with decode's numbers
    bit for bit; every other one is refused with decode's own message."""
    items = _corruptions(np.random.default_rng([seed, 8]), d)
    batch, errors = codec.decode_many(items, d)
    want_ok, want_err = [], {}
    for pid, blob in items:
        try:
            want_ok.append((pid, codec.decode(blob, d)))
        except codec.CodecError as exc:
            want_err[pid] = str(exc)
    assert batch.product_ids == tuple(pid for pid, _p in want_ok)
    assert dict(errors) == want_err and len(errors) == len(want_err)
    for i, (_pid, p) in enumerate(want_ok):
        assert batch.A_inv[i].tobytes() == p.state.A_inv.tobytes()
        assert batch.b[i].tobytes() == p.state.b.tobytes()
        assert (batch.version[i], batch.n[i], batch.updated_at_ms[i]) == (
            p.version, p.state.n, p.updated_at_ms)


def test_decode_many_refuses_counts_a_batch_cannot_hold() -> None:
    """A version of 2^63 is a valid value (uint64) that an int64 batch cannot hold: refused
    with that reason, not wrapped to a negative version."""
    s = _state(3)
    big = codec.encode(linucb.ArmState(s.A_inv, s.b, s.n, version=2**63), 1)
    ok = codec.encode(s, 1)
    batch, errors = codec.decode_many([("big", big), ("ok", ok)], 3)
    assert codec.decode(big, 3).version == 2**63
    assert batch.product_ids == ("ok",)
    assert errors == [("big", "a count or time of 2^63 or more (a batch holds int64)")]


def test_a_batch_is_the_params_it_was_made_of() -> None:
    """ParamBatch.of, slicing, gathering rows and concat keep each product's numbers with its
    id."""
    params = {f"p{i}": codec.decode(codec.encode(_state(4, i), i), 4) for i in range(5)}
    params["other"] = codec.decode(codec.encode(_state(2)), 2)  # another dimension: left out
    batch = codec.ParamBatch.of(params, 4)
    assert batch.product_ids == ("p0", "p1", "p2", "p3", "p4")
    again = codec.ParamBatch.concat([batch[:2], batch[2:2], batch[np.array([4, 2, 3])]], 4)
    assert sorted(again.product_ids) == sorted(batch.product_ids)
    for i, pid in enumerate(again.product_ids):
        p = params[pid]
        assert again.A_inv[i].tobytes() == p.state.A_inv.tobytes()
        assert again.b[i].tobytes() == p.state.b.tobytes()
        assert (again.version[i], again.n[i], again.updated_at_ms[i]) == (
            p.version, p.state.n, p.updated_at_ms)
    assert len(codec.ParamBatch.concat([], 4)) == 0
