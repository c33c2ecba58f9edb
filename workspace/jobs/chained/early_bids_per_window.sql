-- A windowed aggregation over a join of two streams: per 10-second window
-- of bid time, the bids auctions got in their first two seconds, and the
-- best price among them.
--
-- A pair comes out of the join in the batch of its later row; the bid is
-- never before its auction (B."dateTime" BETWEEN A."dateTime" AND ...), so
-- the pairs a batch writes have bid times the watermark has not passed,
-- and a window of bid time closes with the watermark as over one table.
-- Windowing by the auction's time is refused: a pair may come out two
-- seconds of event time after its auction.
--
-- Output: Parquet in workspace/output/chained/early_bids_per_window/.
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

CREATE EXTERNAL TABLE early_bids_per_window
STORED AS PARQUET
LOCATION 'output/chained/early_bids_per_window/';

SET spate.trigger.interval = '1s';

INSERT INTO early_bids_per_window
SELECT window.start AS starttime, window.end AS endtime,
       COUNT(*) AS early_bids, MAX(B.price) AS best_price
FROM auction AS A
JOIN bid AS B
  ON A.id = B.auction
 AND B."dateTime" BETWEEN A."dateTime" AND A."dateTime" + INTERVAL '2' SECOND
GROUP BY window(B."dateTime", '10 seconds');
