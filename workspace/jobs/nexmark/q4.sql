-- Nexmark Q4: Average price for a category.
--
-- The average closing price of auctions per category: the highest bid of
-- each auction while it was open, averaged per category.
--
-- Translation: The query is unchanged: a join of two streams with a time
-- bound, then two aggregations chained. The auction table declares its
-- PRIMARY KEY (id) NOT ENFORCED, as a Flink table would: the id decides the
-- auction's end, which is what lets its maximum close.
--
-- Semantics: Flink's result is a changelog: each auction's maximum is
-- updated as bids come and the average retracts the old one. Spate needs
-- no retractions: an auction's maximum is final once the watermark passes
-- its end (`expires`), when no bid can join it any more, and only then
-- does it reach the average. So the average is over closed auctions, and
-- complete mode rewrites the table of averages each batch.
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

CREATE EXTERNAL TABLE q4_out
STORED AS PARQUET
LOCATION 'output/nexmark/q4/';

SET spate.trigger.interval = '1s';
SET spate.output_mode = 'complete';

INSERT INTO q4_out
SELECT Q.category, AVG(Q.final) AS avg_final
FROM (
    SELECT MAX(B.price) AS final, A.category
    FROM auction A, bid B
    WHERE A.id = B.auction AND B."dateTime" BETWEEN A."dateTime" AND A.expires
    GROUP BY A.id, A.category
) Q
GROUP BY Q.category;
