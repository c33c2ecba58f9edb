-- A join of two streams, aggregated: per seller, how many bids their
-- auctions got in their first two seconds, and the best of them.
--
-- The join writes each pair once, as soon as both rows are seen; the
-- aggregation over it has no window, so it runs in complete mode (update
-- mode, into a Kafka table, Redis or PostgreSQL, writes only the sellers
-- a batch changed). A windowed aggregation over a join is refused: the
-- join's rows may come later than the watermark by up to its bound.
--
-- Output: Parquet in workspace/output/chained/early_bids_per_seller/, the
-- whole table each batch.
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

CREATE EXTERNAL TABLE early_bids_per_seller
STORED AS PARQUET
LOCATION 'output/chained/early_bids_per_seller/';

SET spate.trigger.interval = '1s';
SET spate.output_mode = 'complete';

INSERT INTO early_bids_per_seller
SELECT A.seller, COUNT(*) AS early_bids, MAX(B.price) AS best_price
FROM auction AS A
JOIN bid AS B
  ON A.id = B.auction
 AND B."dateTime" BETWEEN A."dateTime" AND A."dateTime" + INTERVAL '2' SECOND
GROUP BY A.seller;
