-- Session windows: a customer's session ends 3 seconds after its last big order.
-- reference: session_end <= {watermark}
-- reference query: SELECT min(ts), max(ts) + INTERVAL '3 seconds', customer, count(*), sum(amount) FROM (SELECT *, sum(new_session) OVER (PARTITION BY customer ORDER BY ts ROWS UNBOUNDED PRECEDING) AS session FROM (SELECT *, CASE WHEN CAST(ts AS BIGINT) - CAST(lag(ts) OVER (PARTITION BY customer ORDER BY ts) AS BIGINT) < 3000000000 THEN 0 ELSE 1 END AS new_session FROM events WHERE amount > 1.0) starts) sessions GROUP BY customer, session
CREATE EXTERNAL TABLE events (ts TIMESTAMP, customer VARCHAR, amount DOUBLE)
  STORED AS KAFKA LOCATION 'events'
  OPTIONS ('watermark' 'ts - INTERVAL 5 SECONDS');
CREATE EXTERNAL TABLE sessions (session_start TIMESTAMP, session_end TIMESTAMP, customer VARCHAR, orders BIGINT, revenue DOUBLE)
  STORED AS PARQUET LOCATION 'output/session/';
SET spate.trigger.interval = '200ms';
INSERT INTO sessions
SELECT session_window.start, session_window.end, customer, count(*), sum(amount)
FROM events
WHERE amount > 1.0
GROUP BY session_window(ts, '3 seconds'), customer;
