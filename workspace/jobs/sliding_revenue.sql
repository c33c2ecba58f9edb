-- Sliding-window revenue per customer: for every 1-minute window, starting
-- every 10 seconds, each customer's revenue and number of sales, by the
-- sale's own time. A window is written once, when the watermark (the
-- latest sale time seen minus 10 seconds) passes its end; sales older than
-- the watermark are late and dropped (the job's progress counts them).
--
-- Output: Parquet files in workspace/output/sliding_revenue/.
-- Feed it: driver produce --topic sales

CREATE EXTERNAL TABLE sales (
    id BIGINT,
    customer VARCHAR,
    revenue DOUBLE,
    "timestamp" TIMESTAMP,
    country VARCHAR
)
STORED AS KAFKA
LOCATION 'sales'
OPTIONS ('watermark' 'timestamp - INTERVAL 10 SECONDS');

CREATE EXTERNAL TABLE revenue_per_customer (
    window_start TIMESTAMP,
    window_end TIMESTAMP,
    customer VARCHAR,
    revenue DOUBLE,
    sales BIGINT
)
STORED AS PARQUET
LOCATION 'output/sliding_revenue/';

SET spate.trigger.interval = '1s';

INSERT INTO revenue_per_customer
SELECT window.start, window.end, customer, sum(revenue), count(*)
FROM sales
GROUP BY window("timestamp", '1 minute', '10 seconds'), customer;
