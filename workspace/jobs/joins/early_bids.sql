-- An interval join of two streams: each auction with the bids it got in
-- its first two seconds.
--
-- Rows of each side are kept only while a match can still come: an
-- auction until the watermark passes its time plus two seconds, a bid
-- until the watermark passes its own time (no later auction can be
-- older). State stays bounded however long the job runs.
--
-- Output: Parquet in workspace/output/joins/early_bids/.
-- Feed it: driver produce --nexmark

CREATE EXTERNAL TABLE auction (
    id BIGINT,
    "itemName" VARCHAR,
    description VARCHAR,
    "initialBid" BIGINT,
    reserve BIGINT,
    "dateTime" TIMESTAMP,
    expires TIMESTAMP,
    seller BIGINT,
    category BIGINT,
    extra VARCHAR
)
STORED AS KAFKA
LOCATION 'auction'
OPTIONS ('watermark' 'dateTime - INTERVAL 4 SECONDS');

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

CREATE EXTERNAL TABLE early_bids_out
STORED AS PARQUET
LOCATION 'output/joins/early_bids/';

SET spate.trigger.interval = '1s';

INSERT INTO early_bids_out
SELECT A.id AS auction, A."itemName", A."dateTime" AS opened, B.bidder, B.price, B."dateTime" AS bid_at
FROM auction AS A
JOIN bid AS B
  ON A.id = B.auction
 AND B."dateTime" BETWEEN A."dateTime" AND A."dateTime" + INTERVAL '2' SECOND;
