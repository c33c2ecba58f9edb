"""B7: Apache Flink running B1's and B2's queries over the same events.

PyFlink's Table API (the PyPI package `apache-flink`, which carries Flink's
jars) in streaming mode on a local MiniCluster: the filesystem source reads
the events as JSON lines (bounded, so each job ends when its input does),
the watermark is `ts - 5 seconds` as in Spate's job, windows are Flink's
TUMBLE and HOP table functions, and the sink is a blackhole. Each query
runs `RUNS` times, interleaved. It prints Flink's version, the events it
reads (counted in batch mode), then one JSON line per run: the query,
the wall time from submit to the job's end, and Flink's own net runtime
(the job's execution without the client's pre-flight steps).

    python3 bench/flink/queries.py INPUT_DIR PARALLELISM RUNS
"""
import json
import sys
import time

from pyflink.table import EnvironmentSettings, TableEnvironment
from pyflink.version import __version__

input_dir, parallelism, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
print(json.dumps({"version": __version__}), flush=True)

env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
config = env.get_config()
config.set("parallelism.default", str(parallelism))
config.set("table.local-time-zone", "UTC")
config.set("pipeline.name", "spate-bench-b7")
env.execute_sql(
    f"""
    CREATE TABLE events (
        ts TIMESTAMP_LTZ(3),
        customer STRING,
        amount DOUBLE,
        WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
    ) WITH (
        'connector' = 'filesystem',
        'path' = '{input_dir}',
        'format' = 'json',
        'json.timestamp-format.standard' = 'ISO-8601'
    )
    """
)

WINDOW_COLUMNS = "window_start TIMESTAMP(3), customer STRING, revenue DOUBLE, events BIGINT"
WINDOW_SELECT = (
    "SELECT window_start, customer, SUM(amount), COUNT(*) FROM TABLE({}) "
    "GROUP BY window_start, window_end, customer"
)
QUERIES = {
    "stateless": (
        "ts TIMESTAMP_LTZ(3), customer STRING, cents BIGINT",
        "SELECT ts, UPPER(customer), CAST(amount * 100 AS BIGINT) FROM events WHERE amount > 10",
    ),
    "tumbling": (
        WINDOW_COLUMNS,
        WINDOW_SELECT.format("TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND)"),
    ),
    "sliding": (
        WINDOW_COLUMNS,
        WINDOW_SELECT.format(
            "HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND, INTERVAL '30' SECOND)"
        ),
    ),
}
for name, (columns, _) in QUERIES.items():
    env.execute_sql(f"CREATE TABLE sink_{name} ({columns}) WITH ('connector' = 'blackhole')")

# Every event must be read, or the runs below measure nothing: a count in
# batch mode first, which also warms the JVM up (to the baseline's good).
check = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
check.execute_sql(
    f"""
    CREATE TABLE events (ts TIMESTAMP_LTZ(3), customer STRING, amount DOUBLE)
    WITH ('connector' = 'filesystem', 'path' = '{input_dir}', 'format' = 'json',
          'json.timestamp-format.standard' = 'ISO-8601')
    """
)
with check.execute_sql("SELECT COUNT(*), COUNT(ts) FROM events").collect() as rows:
    count, with_time = next(iter(rows))
print(json.dumps({"rows": count, "rows_with_time": with_time}), flush=True)

for run in range(runs):
    for name, (_, query) in QUERIES.items():
        started = time.time()
        result = env.execute_sql(f"INSERT INTO sink_{name} {query}")
        execution = result.get_job_client().get_job_execution_result().result()
        wall = time.time() - started
        print(
            json.dumps(
                {
                    "query": name,
                    "run": run + 1,
                    "seconds": wall,
                    "net_seconds": execution.get_net_runtime() / 1000.0,
                }
            ),
            flush=True,
        )
