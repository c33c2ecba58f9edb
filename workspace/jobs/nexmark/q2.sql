-- Nexmark Q2: Selection.
--
-- The bids on a set of auctions: those whose id is a multiple of 123.
--
-- Translation: Flink's `MOD(auction, 123)` is `auction % 123`.
--
-- Output: Parquet in workspace/output/nexmark/q2/.
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

CREATE EXTERNAL TABLE q2_out
STORED AS PARQUET
LOCATION 'output/nexmark/q2/';

SET spate.trigger.interval = '1s';

INSERT INTO q2_out
SELECT auction, price FROM bid WHERE auction % 123 = 0;
