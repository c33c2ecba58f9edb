-- Nexmark Q1: Currency conversion.
--
-- Converts each bid's price from dollars to euros.
--
-- Translation: Flink's `0.908 * price` is a DECIMAL; here the literal is a
-- DOUBLE, as in DataFusion, so `price` is written as DOUBLE.
--
-- Output: Parquet in workspace/output/nexmark/q1/.
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

CREATE EXTERNAL TABLE q1_out
STORED AS PARQUET
LOCATION 'output/nexmark/q1/';

SET spate.trigger.interval = '1s';

INSERT INTO q1_out
SELECT auction, bidder, 0.908 * price AS price, "dateTime", extra FROM bid;
