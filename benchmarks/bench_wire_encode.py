"""In-process CPU time of Avro wire encoding per record: fastavro alone, the compiled pure-Python
writer and the encoder's own writer (the C twin, cdc._avrowrite, where it was built; with
CDC_PURE_PYTHON=1 the pure-Python one again).

The records are those of the WAL benchmark (5-field value) and of the polling benchmark (10-field
value), built from driver-like Python values by the project's converter, as the pipeline hands
them to WireEncoder. Each run encodes every record with both paths, alternating A/B passes; the
process CPU time (time.process_time) per record is reported per pass, the minimum and median.
``compiled_us`` is ``WireEncoder.encode`` with its own writer (``c_writer``: the C one),
``python_us`` the same encoder given the pure-Python compiled writer.

  python benchmarks/bench_wire_encode.py [--records 20000] [--runs 7] [--quick]

The last line printed is JSON. No service is needed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_polling_initial_load as polling
from _common import KEY, VALUE

from cdc import accel
from cdc.schemas.convert import compile_record
from cdc.schemas.fastwrite import compile_record_writer
from cdc.schemas.wire import WireEncoder


def wal_rows(n: int) -> list[dict[str, Any]]:
    t0 = dt.datetime(2026, 12, 3, 9, 0, tzinfo=dt.UTC)
    return [
        {"id": i, "account": i % 1000, "label": f"row {i}", "amount": Decimal(i % 100000) / 100,
         "created_at": t0 + dt.timedelta(microseconds=37 * i)}
        for i in range(1, n + 1)
    ]  # fmt: skip


def polling_rows(n: int) -> list[dict[str, Any]]:
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    return [
        {"id": g, "c_int": g % 100000, "c_bigint": g * 7919, "c_text": f"{g:032x}", "c_label": f"label-{g % 50}",
         "c_amount": Decimal(g % 1000000) / 100, "c_flag": g % 2 == 0,
         "c_day": dt.date(2020, 1, 1) + dt.timedelta(days=g % 2000), "c_at": t0 + dt.timedelta(seconds=g),
         "updated_at": dt.datetime(2024, 1, 1) + dt.timedelta(milliseconds=g)}
        for g in range(1, n + 1)
    ]  # fmt: skip


def cpu_us_per_record(encode: Callable[[dict[str, Any]], bytes], records: list[dict[str, Any]]) -> float:
    t0 = time.process_time()
    for r in records:
        encode(r)
    return (time.process_time() - t0) / len(records) * 1e6


def measure(name: str, key: Any, value: Any, rows: list[dict[str, Any]], runs: int) -> dict[str, Any]:
    conv_key, conv_value = compile_record(key, stream=name), compile_record(value, stream=name)
    keys = [conv_key(r) for r in rows]
    values = [conv_value(r) for r in rows]
    out: dict[str, Any] = {}
    for label, schema, records in (("key", key, keys), ("value", value, values)):
        enc = WireEncoder(schema, 1)
        assert enc._compiled is not None
        # the same bytes, and from the compiled writer itself (no record falls back)
        assert all(enc._compiled(r) == enc.encode_fastavro(r) for r in records)
        python = WireEncoder(schema, 1)
        python._compiled = compile_record_writer(enc._parsed, enc._header, accelerated=False)
        assert python._compiled is not None
        assert all(python._compiled(r) == enc.encode_fastavro(r) for r in records)
        c_module = accel.load("_avrowrite")
        a: list[float] = []
        b: list[float] = []
        p: list[float] = []
        for _ in range(runs):
            a.append(cpu_us_per_record(enc.encode_fastavro, records))
            p.append(cpu_us_per_record(python.encode, records))
            b.append(cpu_us_per_record(enc.encode, records))
        out[label] = {
            "fastavro_us": {"min": round(min(a), 3), "median": round(statistics.median(a), 3)},
            "python_us": {"min": round(min(p), 3), "median": round(statistics.median(p), 3)},
            "compiled_us": {"min": round(min(b), 3), "median": round(statistics.median(b), 3)},
            "c_writer": c_module is not None and isinstance(enc._compiled, c_module.Writer),
            "speedup_median": round(statistics.median(a) / statistics.median(b), 2),
            "python_over_compiled_median": round(statistics.median(p) / statistics.median(b), 2),
        }
        print(f"{name} {label}: fastavro {a} | python {p} | compiled {b}", file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="2,000 records, 2 runs (make bench-quick)")
    args = parser.parse_args()
    if args.quick:
        args.records, args.runs = 2_000, 2
    result = {
        "wal_5_fields": measure("wal", KEY, VALUE, wal_rows(args.records), args.runs),
        "polling_10_fields": measure(
            "polling", polling.KEY, polling.VALUE, polling_rows(args.records), args.runs
        ),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
