-- Nexmark Q8: Monitor new users.
--
-- Persons who joined and started an auction in the same 10-second window.
--
-- Translation: Flink's TUMBLE windows are window("dateTime", '10 seconds');
-- a join of two windowed streams on equal windows. Differs from Flink in
-- when, not what: each side's GROUP BY has no aggregate function, so it
-- writes a group when first seen, and a match is written as soon as both
-- sides have it, before the window closes (Flink waits for the window's
-- end). Each side's rows leave the join's state when the watermark passes
-- their window's end.
--
-- Output: Parquet in workspace/output/nexmark/q8/.
-- Feed it: driver produce --nexmark, or make the tables below STORED AS
-- NEXMARK to generate the events in the tasks (see README.md).

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

CREATE EXTERNAL TABLE q8_out
STORED AS PARQUET
LOCATION 'output/nexmark/q8/';

SET spate.trigger.interval = '1s';

INSERT INTO q8_out
SELECT P.id, P.name, P.starttime
FROM (
    SELECT id, name, window.start AS starttime, window.end AS endtime
    FROM person
    GROUP BY id, name, window("dateTime", '10 seconds')
) P
JOIN (
    SELECT seller, window.start AS starttime, window.end AS endtime
    FROM auction
    GROUP BY seller, window("dateTime", '10 seconds')
) A
ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime;
