-- A full outer interval join: people who open an auction within ten
-- seconds of signing up, the people who do not (auction columns null),
-- and the auctions of sellers who signed up earlier (person columns null).
--
-- A person is kept until the watermark passes their sign-up time plus ten
-- seconds, an auction until the watermark passes its own time; each is
-- written without a match then, if it never matched.
--
-- Output: Parquet in workspace/output/joins/new_sellers/.
-- Feed it: driver produce --nexmark

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

CREATE EXTERNAL TABLE new_sellers_out
STORED AS PARQUET
LOCATION 'output/joins/new_sellers/';

SET spate.trigger.interval = '1s';

INSERT INTO new_sellers_out
SELECT P.id AS person, P.name, P."dateTime" AS joined, A.id AS auction, A.seller, A."dateTime" AS opened
FROM person AS P
FULL OUTER JOIN auction AS A
  ON P.id = A.seller
 AND A."dateTime" BETWEEN P."dateTime" AND P."dateTime" + INTERVAL '10' SECOND;
