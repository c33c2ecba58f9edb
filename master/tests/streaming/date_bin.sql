-- Tumbling windows written with DataFusion's date_bin: male/female/other counts per 20 seconds.
-- reference: window_start + INTERVAL '20 seconds' <= {watermark}
CREATE EXTERNAL TABLE events (ts TIMESTAMP, gender VARCHAR, user_id BIGINT)
  STORED AS KAFKA LOCATION 'events'
  OPTIONS ('watermark' 'ts - INTERVAL 5 SECONDS');
CREATE EXTERNAL TABLE genders (window_start TIMESTAMP, male BIGINT, female BIGINT, other BIGINT, users BIGINT)
  STORED AS JSON LOCATION 'output/date_bin/';
SET spate.trigger.interval = '200ms';
INSERT INTO genders
SELECT date_bin(INTERVAL '20 seconds', ts),
       sum(CASE WHEN gender = 'M' THEN 1 ELSE 0 END),
       sum(CASE WHEN gender = 'F' THEN 1 ELSE 0 END),
       sum(CASE WHEN gender NOT IN ('M', 'F') THEN 1 ELSE 0 END),
       count(DISTINCT user_id)
FROM events
GROUP BY date_bin(INTERVAL '20 seconds', ts);
