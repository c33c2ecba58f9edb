-- Top-N per key over a stream: each auction's first three bids, by event
-- time (ROW_NUMBER() <= N, as Flink plans it: its Rank operator).
--
-- A bid's number is final once the watermark passes its time (no later
-- bid can be older), so bids wait until then and are written with their
-- number. Once an auction has written three, its later bids are dropped
-- as they come; the count per auction stays in the state.
--
-- Output: Parquet in workspace/output/dedup/first_bids/.
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

CREATE EXTERNAL TABLE first_bids
STORED AS PARQUET
LOCATION 'output/dedup/first_bids/';

SET spate.trigger.interval = '1s';

INSERT INTO first_bids
SELECT auction, bidder, price, "dateTime", bid_number
FROM (
    SELECT auction, bidder, price, "dateTime",
           ROW_NUMBER() OVER (PARTITION BY auction ORDER BY "dateTime") AS bid_number
    FROM bid
) AS numbered
WHERE bid_number <= 3;
