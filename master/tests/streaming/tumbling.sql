-- Tumbling 10-second windows: sales, revenue and distinct customers per country.
-- reference: window_end <= {watermark}
CREATE EXTERNAL TABLE events (ts TIMESTAMP, customer VARCHAR, country VARCHAR, amount DOUBLE)
  STORED AS KAFKA LOCATION 'events'
  OPTIONS ('watermark' 'ts - INTERVAL 5 SECONDS');
CREATE EXTERNAL TABLE per_country (window_start TIMESTAMP, window_end TIMESTAMP, country VARCHAR, sales BIGINT, revenue DOUBLE, customers BIGINT)
  STORED AS PARQUET LOCATION 'output/tumbling/';
SET spate.trigger.interval = '200ms';
INSERT INTO per_country
SELECT window.start, window.end, country, count(*), sum(amount), count(DISTINCT customer)
FROM events
GROUP BY window(ts, '10 seconds'), country;
