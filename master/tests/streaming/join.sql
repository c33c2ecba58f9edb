-- Stream-static join: revenue per customer segment in tumbling 20-second windows,
-- segments from a CSV table in the workspace.
-- reference: window_end <= {watermark}
CREATE EXTERNAL TABLE events (ts TIMESTAMP, customer VARCHAR, amount DOUBLE)
  STORED AS KAFKA LOCATION 'events'
  OPTIONS ('watermark' 'ts - INTERVAL 5 SECONDS');
CREATE EXTERNAL TABLE customers (customer VARCHAR, segment VARCHAR)
  STORED AS CSV LOCATION 'data/customers.csv';
CREATE EXTERNAL TABLE per_segment (window_start TIMESTAMP, window_end TIMESTAMP, segment VARCHAR, revenue DOUBLE, orders BIGINT)
  STORED AS PARQUET LOCATION 'output/join/';
SET spate.trigger.interval = '200ms';
INSERT INTO per_segment
SELECT window.start, window.end, c.segment, sum(e.amount), count(*)
FROM events e JOIN customers c ON e.customer = c.customer
GROUP BY window(e.ts, '20 seconds'), c.segment;
