-- A left outer join of two streams on equal windows: each auction with
-- the bids on it in the same 10-second window, or alone, with nulls, when
-- it got none there.
--
-- Equal date_bin windows bound both sides: a row of either can match
-- only rows of its own window, so it is kept until the watermark passes
-- the window's end, and an auction without a bid is written then.
--
-- Output: Parquet in workspace/output/joins/same_window_bids/.
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

CREATE EXTERNAL TABLE same_window_bids
STORED AS PARQUET
LOCATION 'output/joins/same_window_bids/';

SET spate.trigger.interval = '1s';

INSERT INTO same_window_bids
SELECT A.id AS auction, A."dateTime" AS opened, B.bidder, B.price, B."dateTime" AS bid_at
FROM auction AS A
LEFT JOIN bid AS B
  ON A.id = B.auction
 AND date_bin(INTERVAL '10 seconds', A."dateTime") = date_bin(INTERVAL '10 seconds', B."dateTime");
