-- Per-window metrics: for every 10-second window of sale time, the number
-- of sales, the revenue, how many countries and unique customers bought,
-- and the sales by male and female customers. Windows are written once,
-- when the watermark (latest sale time minus 5 seconds) passes their end.
--
-- Output: JSON lines in workspace/output/window_metrics/.
-- Feed it: driver produce --topic sales

CREATE EXTERNAL TABLE sales (
    id BIGINT,
    customer VARCHAR,
    revenue DOUBLE,
    "timestamp" TIMESTAMP,
    country VARCHAR,
    gender VARCHAR
)
STORED AS KAFKA
LOCATION 'sales'
OPTIONS ('watermark' 'timestamp - INTERVAL 5 SECONDS');

CREATE EXTERNAL TABLE metrics (
    window_start TIMESTAMP,
    window_end TIMESTAMP,
    sales BIGINT,
    revenue DOUBLE,
    countries BIGINT,
    unique_customers BIGINT,
    male BIGINT,
    female BIGINT
)
STORED AS JSON
LOCATION 'output/window_metrics/';

SET spate.trigger.interval = '1s';

INSERT INTO metrics
SELECT window.start,
       window.end,
       count(*),
       sum(revenue),
       count(DISTINCT country),
       count(DISTINCT id),
       sum(CASE WHEN gender = 'M' THEN 1 ELSE 0 END),
       sum(CASE WHEN gender = 'F' THEN 1 ELSE 0 END)
FROM sales
GROUP BY window("timestamp", '10 seconds');
