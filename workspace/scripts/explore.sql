-- A first look at the sales topic, as a REPL script:
--   cargo run --bin driver -- repl --kafka -f workspace/scripts/explore.sql
-- Each query runs on the workers over what the topic holds when it starts.

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
OPTIONS ('format' 'json');

\d sales

-- Revenue per country.
SELECT country, count(*) AS sales, round(sum(revenue), 2) AS revenue
FROM sales
GROUP BY country
ORDER BY revenue DESC
LIMIT 10;

-- Revenue per 10-second window, the windows a streaming job would emit.
SELECT window.start, window.end, count(*) AS sales, round(sum(revenue), 2) AS revenue
FROM sales
GROUP BY window("timestamp", '10 seconds')
ORDER BY window.start
LIMIT 10;

\explain SELECT country, count(*) FROM sales GROUP BY country
