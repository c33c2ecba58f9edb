-- A left outer interval join: each auction with the bids of its first two
-- seconds, and the auctions that got none, with nulls for the bid.
--
-- As in Spark's append mode, a matched pair is written as soon as both
-- rows are seen (a late-arriving bid still matches an auction held in the
-- state), and an auction without a match is written once the watermark
-- passes its time plus two seconds, when no bid can match it any more.
--
-- Output: Parquet in workspace/output/joins/quiet_auctions/.
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

CREATE EXTERNAL TABLE quiet_auctions_out
STORED AS PARQUET
LOCATION 'output/joins/quiet_auctions/';

SET spate.trigger.interval = '1s';

INSERT INTO quiet_auctions_out
SELECT A.id AS auction, A.category, A."dateTime" AS opened, B.bidder, B.price
FROM auction AS A
LEFT JOIN bid AS B
  ON A.id = B.auction
 AND B."dateTime" BETWEEN A."dateTime" AND A."dateTime" + INTERVAL '2' SECOND;
