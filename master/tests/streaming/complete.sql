-- Complete mode: the whole table of sales per country, rewritten every batch.
-- reference: true
CREATE EXTERNAL TABLE events (ts TIMESTAMP, country VARCHAR, amount DOUBLE)
  STORED AS KAFKA LOCATION 'events';
CREATE EXTERNAL TABLE totals (country VARCHAR, sales BIGINT, revenue DOUBLE, biggest DOUBLE)
  STORED AS PARQUET LOCATION 'output/complete/';
SET spate.trigger.interval = '200ms';
SET spate.output_mode = 'complete';
INSERT INTO totals
SELECT country, count(*), sum(amount), max(amount) FROM events GROUP BY country;
