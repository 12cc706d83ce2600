"""Redis parameter codec: our raw float64 layout against JSON text (the obvious alternative),
same states, same run; and decoding many values at once (``decode_many``, what serving's
refresher uses) against one ``decode`` per value, per value, at batch sizes 64 and 1,024.
Writes results/bench_codec.json."""

from __future__ import annotations

import json
import time

import numpy as np

from bench.common import percentiles_ms, write_result
from contract import codec, linucb


def _time(fn, arg, repeat: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(arg)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    rng = np.random.default_rng(0)
    d = 15
    state = linucb.init_state(d)
    for _ in range(200):
        state = linucb.update(state, rng.uniform(0, 1, d), float(rng.uniform() < 0.2))
    raw = codec.encode(state, 1)

    def to_json(s: linucb.ArmState) -> bytes:
        return json.dumps({"n": s.n, "A_inv": s.A_inv.tolist(), "b": s.b.tolist()}).encode()

    def from_json(blob: bytes) -> linucb.ArmState:
        o = json.loads(blob)
        return linucb.ArmState(np.array(o["A_inv"]), np.array(o["b"]), o["n"])

    js = to_json(state)
    exact_json = from_json(js).A_inv.tobytes() == state.A_inv.tobytes()
    repeat = 20000
    result = {
        "dim": d,
        "binary": {
            "bytes": len(raw),
            "encode": percentiles_ms(_time(lambda s: codec.encode(s), state, repeat)),
            "decode": percentiles_ms(_time(codec.decode, raw, repeat)),
        },
        "json": {
            "bytes": len(js),
            "encode": percentiles_ms(_time(to_json, state, repeat)),
            "decode": percentiles_ms(_time(from_json, js, repeat)),
            "bit_exact": exact_json,
        },
    }
    result["ratio_json_over_binary"] = {
        "bytes": len(js) / len(raw),
        "decode_p50": result["json"]["decode"]["p50_ms"] / result["binary"]["decode"]["p50_ms"],
        "encode_p50": result["json"]["encode"]["p50_ms"] / result["binary"]["encode"]["p50_ms"],
    }
    batches = {}
    items = [(f"p{i}", raw) for i in range(1024)]
    for size in (64, 1024):
        part = items[:size]
        one = [t / size for t in _time(lambda it: [codec.decode(b, d) for _p, b in it], part,
                                       max(20, repeat // size))]
        many = [t / size for t in _time(lambda it: codec.decode_many(it, d), part,
                                        max(20, repeat // size))]
        per_value = {"decode": percentiles_ms(one), "decode_many": percentiles_ms(many)}
        per_value["ratio_p50"] = (per_value["decode_many"]["p50_ms"]
                                  / per_value["decode"]["p50_ms"])
        batches[str(size)] = per_value
    result["batch_decode_per_value"] = batches
    path = write_result("bench_codec", result)
    print(
        f"{'format':8} {'bytes':>6} {'enc p50 ms':>11} {'enc p99':>8}"
        f" {'dec p50 ms':>11} {'dec p99':>8}"
    )
    for name in ("binary", "json"):
        r = result[name]
        print(
            f"{name:8} {r['bytes']:6d} {r['encode']['p50_ms']:11.4f} {r['encode']['p99_ms']:8.4f} "
            f"{r['decode']['p50_ms']:11.4f} {r['decode']['p99_ms']:8.4f}"
        )
    print(
        f"JSON/binary: size x{result['ratio_json_over_binary']['bytes']:.2f}, decode p50 "
        f"x{result['ratio_json_over_binary']['decode_p50']:.1f}; JSON bit-exact: {exact_json}"
    )
    for size, r in batches.items():
        print(f"decoding {size} values, per value: decode p50 {r['decode']['p50_ms'] * 1e3:.1f} us,"
              f" decode_many p50 {r['decode_many']['p50_ms'] * 1e3:.1f} us "
              f"(ratio {r['ratio_p50']:.2f}; p99 {r['decode']['p99_ms'] * 1e3:.1f} / "
              f"{r['decode_many']['p99_ms'] * 1e3:.1f} us)")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
