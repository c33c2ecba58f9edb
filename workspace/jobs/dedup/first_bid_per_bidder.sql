-- Deduplication: one row per bidder, their first bid by event time
-- (ROW_NUMBER() = 1, as Flink plans it: its Deduplicate operator, keeping
-- the first row).
--
-- A bid is written once the watermark passes its time, when no earlier
-- bid of its bidder can still come; later bids of a bidder who has one
-- are dropped as they come. The state keeps each bidder seen (as Flink's
-- does without a state TTL).
--
-- Output: Parquet in workspace/output/dedup/first_bid_per_bidder/.
-- Feed it: driver produce --nexmark

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

CREATE EXTERNAL TABLE first_bid_per_bidder
STORED AS PARQUET
LOCATION 'output/dedup/first_bid_per_bidder/';

SET spate.trigger.interval = '1s';

INSERT INTO first_bid_per_bidder
SELECT bidder, auction, price, "dateTime"
FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder ORDER BY "dateTime") AS rn
    FROM bid
) AS numbered
WHERE rn = 1;
