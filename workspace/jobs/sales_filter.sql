-- Sales filter: every sale worth more than 100, with the customer, the
-- country and the sale's time, written to Parquet files in
-- workspace/output/sales_filter/ exactly once.
--
-- The Kafka table takes the cluster's default Kafka (the master's
-- --kafka-bootstrap, SPATE_KAFKA_BOOTSTRAP) because it names no
-- 'bootstrap.servers'; add that option to read another cluster.

CREATE EXTERNAL TABLE sales (
    id BIGINT,
    customer VARCHAR,
    revenue DOUBLE,
    revenue_counter DOUBLE,
    "timestamp" TIMESTAMP,
    country VARCHAR,
    gender VARCHAR,
    ip VARCHAR
)
STORED AS KAFKA
LOCATION 'sales'
OPTIONS ('format' 'json', 'starting_offsets' 'earliest');

CREATE EXTERNAL TABLE big_sales (
    id BIGINT,
    customer VARCHAR,
    country VARCHAR,
    revenue DOUBLE,
    sold_at TIMESTAMP
)
STORED AS PARQUET
LOCATION 'output/sales_filter/';

SET spate.trigger.interval = '1s';

INSERT INTO big_sales
SELECT id, customer, country, revenue, "timestamp"
FROM sales
WHERE revenue > 100;
