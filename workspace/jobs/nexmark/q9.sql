-- Nexmark Q9: Winning bids.
--
-- Each auction with its winning bid: the highest bid made while it was
-- open, the earliest among equal ones.
--
-- Translation: The query is unchanged: a join of two streams with a time
-- bound and a top-1 per auction (ROW_NUMBER() ... <= 1). The auction table
-- declares its PRIMARY KEY (id) NOT ENFORCED, as a Flink table would: the
-- id decides the auction's end, which is what lets its ranking close.
--
-- Semantics: Flink writes a winner as bids come and retracts it when a
-- higher one comes; Spate writes each auction's winner once, when the
-- watermark passes the auction's end (`expires`), since no bid can join
-- the auction after that. Auctions still open when the job stops have no
-- row yet.
--
-- Output: Parquet in workspace/output/nexmark/q9/.
-- Feed it: driver produce --nexmark, or make the tables below STORED AS
-- NEXMARK to generate the events in the tasks (see README.md).

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
    extra VARCHAR,
    PRIMARY KEY (id) NOT ENFORCED
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

CREATE EXTERNAL TABLE q9_out
STORED AS PARQUET
LOCATION 'output/nexmark/q9/';

SET spate.trigger.interval = '1s';

INSERT INTO q9_out
SELECT id, "itemName", description, "initialBid", reserve, "dateTime", expires, seller,
       category, extra, auction, bidder, price, bid_datetime, bid_extra
FROM (
    SELECT A.*, B.auction, B.bidder, B.price, B."dateTime" AS bid_datetime, B.extra AS bid_extra,
           ROW_NUMBER() OVER (PARTITION BY A.id ORDER BY B.price DESC, B."dateTime" ASC) AS rownum
    FROM auction A, bid B
    WHERE A.id = B.auction AND B."dateTime" BETWEEN A."dateTime" AND A.expires
)
WHERE rownum <= 1;
