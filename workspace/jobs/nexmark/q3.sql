-- Nexmark Q3: Local item suggestion.
--
-- Who is selling in category 10 in Oregon, Idaho or California: a join of
-- auctions with the persons who sell them, emitted as the matches appear.
--
-- Translation: Unchanged. A join of two streams without a time bound (state
-- grows with the persons and auctions, as in Flink).
--
-- Output: Parquet in workspace/output/nexmark/q3/.
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

CREATE EXTERNAL TABLE person (
    id BIGINT,
    name VARCHAR,
    "emailAddress" VARCHAR,
    "creditCard" VARCHAR,
    city VARCHAR,
    state VARCHAR,
    "dateTime" TIMESTAMP,
    extra VARCHAR
)
STORED AS KAFKA
LOCATION 'person'
OPTIONS ('watermark' 'dateTime - INTERVAL 4 SECONDS');

CREATE EXTERNAL TABLE q3_out
STORED AS PARQUET
LOCATION 'output/nexmark/q3/';

SET spate.trigger.interval = '1s';

INSERT INTO q3_out
SELECT P.name, P.city, P.state, A.id
FROM auction AS A INNER JOIN person AS P ON A.seller = P.id
WHERE A.category = 10 AND (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA');
