-- Update mode: running revenue per customer into Kafka, keyed by customer, so
-- a compacted topic holds the latest total per customer.
-- reference: true
CREATE EXTERNAL TABLE events (ts TIMESTAMP, customer VARCHAR, amount DOUBLE)
  STORED AS KAFKA LOCATION 'events';
CREATE EXTERNAL TABLE running (revenue DOUBLE, orders BIGINT)
  STORED AS KAFKA LOCATION 'running_totals';
SET spate.trigger.interval = '200ms';
SET spate.output_mode = 'update';
INSERT INTO running (_key, revenue, orders)
SELECT customer, sum(amount), count(*) FROM events GROUP BY customer;
