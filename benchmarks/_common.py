"""Shared bits of the benchmark scripts: service addresses, RSS, the final JSON line."""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

#: the key and value schemas of the log-source benchmarks (the table bench)
KEY = {"type": "record", "name": "K", "fields": [{"name": "id", "type": "long"}]}
VALUE = {
    "type": "record",
    "name": "Row",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "account", "type": "int"},
        {"name": "label", "type": "string"},
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}},
        {"name": "created_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
    ],
}


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        sys.exit(f'benchmark: {name} is not set; run: make services && eval "$(make env)"')
    return value


def _descendants(root: int) -> list[int]:
    """``root`` and every process below it (the connector's capture process included)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                # the field after the parenthesised command name is the state, then the ppid
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parents.get(pid, []))
    return out


#: how long the list of descendants is reused: walking all of /proc costs milliseconds of CPU
#: (hundreds of processes on a shared machine), and sampled every 50-100 ms that load, taken
#: from the measured process itself, cost the polling benchmark about a tenth of its samples
_TREE_TTL_S = 1.0
_tree: tuple[float, list[int]] = (0.0, [])


def _tree_pids() -> list[int]:
    global _tree
    now = time.monotonic()
    if now - _tree[0] > _TREE_TTL_S:
        _tree = (now, _descendants(os.getpid()))
    return _tree[1]


def cpu_s(pids: Iterable[int]) -> float:
    """User + system CPU seconds used so far by the processes ``pids`` (those still running)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        except (OSError, IndexError, ValueError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


def children_cpu_s(exclude: tuple[int | None, ...] = ()) -> float:
    """CPU seconds used so far by this process's running descendants (the connector's capture
    process) but ``exclude`` (e.g. a workload writer): getrusage counts a child only once it
    was reaped."""
    return cpu_s(pid for pid in _descendants(os.getpid())[1:] if pid not in exclude)


def current_rss_mb() -> float:
    """Resident set size of this process and its descendants now, in MiB (the list of
    descendants is refreshed every second)."""
    total = 0
    for pid in _tree_pids():
        try:
            with open(f"/proc/{pid}/statm") as fh:
                total += int(fh.read().split()[1])
        except OSError:
            continue
    return total * os.sysconf("SC_PAGE_SIZE") / 2**20


class _PeakSampler:
    """Samples the process tree's RSS every 100 ms: a child's peak is invisible to getrusage
    until the child is reaped, so the tree is measured while it runs."""

    def __init__(self) -> None:
        self.peak = 0.0
        threading.Thread(target=self._run, daemon=True, name="rss-sampler").start()

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, current_rss_mb())
            time.sleep(0.1)


_sampler: _PeakSampler | None = None


def start_rss_sampling() -> None:
    """Call from the benchmark's main(): spawned children re-import the script's modules, so
    sampling must not start on import."""
    global _sampler
    if _sampler is None:
        _sampler = _PeakSampler()


def rss_mb() -> float:
    """Peak resident set size of this process plus its descendants (sampled), in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return max(own, _sampler.peak if _sampler is not None else 0.0)


def drop_pg_database(dsn: str, name: str) -> None:
    """Drop a benchmark's PostgreSQL database and the replication slots in it (a logical slot
    keeps its database from being dropped)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = %s",
            (name,),
        )
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def report(result: dict[str, Any]) -> None:
    """The last line of every benchmark: one JSON object."""
    print(json.dumps(result, sort_keys=False), flush=True)


def drain(
    runner: Any,
    name: str,
    events: int,
    timeout: float,
    cpu: list[float] | None = None,
    capture_cpu: list[float] | None = None,
) -> tuple[float, float]:
    """Run the connector until its stream ``rows`` produced ``events`` events, all acknowledged and
    committed; returns (first event read, last acknowledged) monotonic times. ``cpu``, when given,
    receives this process's CPU seconds over the same span (start-up excluded), ``capture_cpu``
    its capture process's (0 when the source runs inline)."""
    counter = runner.metrics.events.labels(name, "rows")
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    first = None
    cpu_first = children_first = 0.0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        produced = counter._value.get()
        if first is None and produced > 0:
            first = time.monotonic()
            cpu_first = time.process_time()
            children_first = children_cpu_s() if capture_cpu is not None else 0.0
        in_flight = runner.metrics.in_flight.labels(name)._value.get()
        if produced >= events and in_flight == 0:  # every event acknowledged by the broker and committed
            if cpu is not None:
                cpu.append(time.process_time() - cpu_first)
            if capture_cpu is not None:
                capture_cpu.append(children_cpu_s() - children_first)
            return first or time.monotonic(), time.monotonic()
        if not thread.is_alive():
            sys.exit("benchmark: the connector stopped early")
        time.sleep(0.02)
    sys.exit(f"benchmark: timed out ({counter._value.get()} of {events} events)")


def consume_latencies(
    topic: str,
    latency_ms: Callable[[Any, float], float],
    ready: Any,
    writer_done: Any,
    out: Any,
    deadline_s: float,
) -> None:
    """The measuring consumer of a live benchmark, in a process of its own: inside the
    connector's process its polling and Avro decoding would compete with the pipeline for the
    GIL (a thread holding it keeps another waiting up to the 5 ms switch interval), which is
    latency of the benchmark, not of the connector. Sets ``ready`` once connected and fetching,
    reads until the writer is done and the topic is idle (or ``deadline_s`` after the writer
    started), then sends the latencies (``latency_ms(message, received_epoch_s)``) on ``out``."""
    from confluent_kafka import OFFSET_END, Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": env("CDC_TEST_KAFKA_BOOTSTRAP"),
            "group.id": f"bench-{topic}",
            "fetch.wait.max.ms": 5,  # measure the pipeline, not the consumer's own fetch wait
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_END)])  # after the warm-up row
    # Connect and fetch before the writer starts: the first connection and fetch session
    # would otherwise add their setup time to the first events' latency.
    for _ in range(3):
        consumer.poll(0.5)
    ready.set()
    latencies: list[float] = []
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            if writer_done.is_set() and msg is None and latencies:
                break
            continue
        latencies.append(latency_ms(msg, time.time()))
    consumer.close()
    out.send(latencies)


def measure_live(
    runner: Any, topic: str, warm_up: Callable[[], None], writer: Callable[..., None],
    writer_args: tuple[Any, ...], latency_ms: Callable[[Any, float], float], seconds: float,
) -> dict[str, Any]:  # fmt: skip
    """Run the connector until a first row (``warm_up()`` writes it) went through it, then the
    measuring consumer (from the topic's end) and the workload writer, each in a process of its
    own, for ``seconds``; latency percentiles and the capture process's CPU per event. Before
    the first row arrived, latency would measure the connector's start-up."""
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    warm_up()  # the source's start position is already stored: the row waits for it if need be
    produced = runner.metrics.events.labels(topic, "rows")
    deadline = time.monotonic() + 120
    while produced._value.get() < 1:
        if not thread.is_alive() or time.monotonic() > deadline:
            sys.exit("benchmark: the warm-up row did not go through the connector")
        time.sleep(0.02)
    ctx = multiprocessing.get_context("spawn")
    ready, writer_done = ctx.Event(), ctx.Event()
    receive, send = ctx.Pipe(duplex=False)
    consumer = ctx.Process(
        target=consume_latencies, args=(topic, latency_ms, ready, writer_done, send, seconds + 10)
    )
    consumer.start()
    if not ready.wait(60):
        sys.exit("benchmark: the measuring consumer did not connect")
    proc = ctx.Process(target=writer, args=writer_args)
    proc.start()
    others = (proc.pid, consumer.pid)  # the capture process's CPU, not the writer's or the consumer's
    capture_first = children_cpu_s(exclude=others)
    proc.join()
    writer_done.set()
    latencies: list[float] = receive.recv()
    capture_cpu = children_cpu_s(exclude=others) - capture_first
    consumer.join()
    runner.stop.set()
    thread.join(30)
    out: dict[str, Any] = dict(percentiles(latencies))
    out["capture_cpu_us_per_event"] = round(capture_cpu / max(len(latencies), 1) * 1e6, 1)
    return out


def percentiles(latencies: list[float]) -> dict[str, float]:
    """p50, p99 and max of latencies in milliseconds (-1 when there are none)."""
    latencies = sorted(latencies)

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))], 1) if latencies else -1.0

    return {"events": len(latencies), "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0)}


def drain_until_empty(
    config: Any, stream: str, events: int, remaining: Any, cpu: list[float] | None = None
) -> tuple[float, float]:
    """Run the connector of ``config`` (a Path) until it produced ``events`` events of ``stream``,
    nothing is in flight and ``remaining()`` (rows left at the source) is 0; then stop it.
    Returns (first event, drained) monotonic times. ``cpu``, when given, receives the CPU
    seconds of this process and its children (a capture process) over the same span."""
    from cdc.config import load_config
    from cdc.runtime.runner import Runner

    runner = Runner(load_config(config))
    name = runner.app.name
    counter = runner.metrics.events.labels(name, stream)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    first = None
    cpu_first = 0.0
    while True:
        produced = counter._value.get()
        if first is None and produced > 0:
            first = time.monotonic()
            cpu_first = time.process_time() + children_cpu_s()
        if (
            produced >= events
            and runner.metrics.in_flight.labels(name)._value.get() == 0
            and remaining() == 0
        ):
            done = time.monotonic()
            if cpu is not None:
                cpu.append(time.process_time() + children_cpu_s() - cpu_first)
            break
        if not thread.is_alive():
            sys.exit("benchmark: the connector stopped early")
        time.sleep(0.05)
    runner.stop.set()
    thread.join(30)
    assert first is not None
    return first, done
