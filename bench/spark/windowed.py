"""B6: Spark Structured Streaming running B2's tumbling-window query.

PySpark local[2] reads the same events as JSON files with the file source,
available-now, and writes Parquet in append mode, as Spate's job does.
Prints the query's wall time (from start to termination, the SparkSession
already up, as Spate's figure starts at submit with its cluster up) and the
rows it wrote, as JSON on the last line.

    python3 bench/spark/windowed.py INPUT_DIR WORK_DIR
"""
import json
import os
import sys
import time

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StringType, StructField, StructType, TimestampType

input_dir, work_dir = sys.argv[1], sys.argv[2]
spark = (
    SparkSession.builder.master("local[2]")
    .appName("spate-bench-b6")
    .config("spark.sql.shuffle.partitions", "2")
    .config("spark.ui.enabled", "false")
    .config("spark.sql.session.timeZone", "UTC")
    .getOrCreate()
)
spark.sparkContext.setLogLevel("ERROR")
schema = StructType(
    [
        StructField("ts", TimestampType()),
        StructField("customer", StringType()),
        StructField("amount", DoubleType()),
    ]
)
events = spark.readStream.schema(schema).json(input_dir)
windows = (
    events.withWatermark("ts", "5 seconds")
    .groupBy(F.window("ts", "10 seconds"), "customer")
    .agg(F.sum("amount").alias("revenue"), F.count("*").alias("events"))
    .select(F.col("window.start").alias("window_start"), "customer", "revenue", "events")
)
out = os.path.join(work_dir, "out")
started = time.time()
query = (
    windows.writeStream.format("parquet")
    .outputMode("append")
    .option("path", out)
    .option("checkpointLocation", os.path.join(work_dir, "checkpoint"))
    .trigger(availableNow=True)
    .start()
)
query.awaitTermination()
elapsed = time.time() - started
rows = spark.read.parquet(out).count()
print(json.dumps({"seconds": elapsed, "rows": rows}))
spark.stop()
