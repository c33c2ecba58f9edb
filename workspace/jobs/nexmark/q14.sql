-- Nexmark Q14: Calculation.
--
-- Converts prices, keeps those between one and fifty million, names the
-- time of day of each bid and counts the c's in its extra field.
--
-- Translation: Flink's HOUR(dateTime) is date_part('hour', "dateTime"); its
-- count_char UDF is the length lost by removing the character.
--
-- Output: Parquet in workspace/output/nexmark/q14/.
-- Feed it: driver produce --nexmark, or make the tables below STORED AS
-- NEXMARK to generate the events in the tasks (see README.md).

CREATE EXTERNAL TABLE bid (
    auction BIGINT,
    bidder BIGINT,
    price BIGINT,
    channel VARCHAR,
    url VARCHAR,
    "dateTime" TIMESTAMP,
    extra VARCHAR
)
STORED AS KAFKA
LOCATION 'bid'
OPTIONS ('watermark' 'dateTime - INTERVAL 4 SECONDS');

CREATE EXTERNAL TABLE q14_out
STORED AS PARQUET
LOCATION 'output/nexmark/q14/';

SET spate.trigger.interval = '1s';

INSERT INTO q14_out
SELECT auction, bidder, 0.908 * price AS price,
       CASE
           WHEN date_part('hour', "dateTime") >= 8 AND date_part('hour', "dateTime") <= 18 THEN 'dayTime'
           WHEN date_part('hour', "dateTime") <= 6 OR date_part('hour', "dateTime") >= 20 THEN 'nightTime'
           ELSE 'otherTime'
       END AS "bidTimeType",
       "dateTime", extra,
       character_length(extra) - character_length(replace(extra, 'c', '')) AS c_counts
FROM bid
WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000;
