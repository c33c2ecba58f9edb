-- Nexmark Q4: Average price for a category.
--
-- The average closing price of auctions per category: the highest bid of
-- each auction while it was open, averaged per category.
--
-- Translation: Unchanged. A join of two streams with a time bound, then two
-- aggregations chained; Flink's result is a changelog (retractions).
-- Refused: the maximum per auction has no window, so it only ever updates,
-- and an average over updated rows needs the retractions Spate's update
-- mode does not carry.
--
-- Output: Parquet in workspace/output/nexmark/q4/.
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

CREATE EXTERNAL TABLE q4_out
STORED AS PARQUET
LOCATION 'output/nexmark/q4/';

SET spate.trigger.interval = '1s';

INSERT INTO q4_out
SELECT Q.category, AVG(Q.final) AS avg_final
FROM (
    SELECT MAX(B.price) AS final, A.category
    FROM auction A, bid B
    WHERE A.id = B.auction AND B."dateTime" BETWEEN A."dateTime" AND A.expires
    GROUP BY A.id, A.category
) Q
GROUP BY Q.category;
