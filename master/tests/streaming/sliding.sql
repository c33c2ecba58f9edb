-- Sliding windows, 30 seconds every 10 seconds: revenue per customer.
-- reference: window_end <= {watermark}
CREATE EXTERNAL TABLE events (ts TIMESTAMP, customer VARCHAR, amount DOUBLE)
  STORED AS KAFKA LOCATION 'events'
  OPTIONS ('watermark' 'ts - INTERVAL 5 SECONDS');
CREATE EXTERNAL TABLE revenue (window_start TIMESTAMP, window_end TIMESTAMP, customer VARCHAR, revenue DOUBLE, orders BIGINT)
  STORED AS PARQUET LOCATION 'output/sliding/';
SET spate.trigger.interval = '200ms';
INSERT INTO revenue
SELECT window.start, window.end, customer, sum(amount), count(*)
FROM events
GROUP BY window(ts, '30 seconds', '10 seconds'), customer;
