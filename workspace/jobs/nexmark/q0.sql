-- Nexmark Q0: Pass through.
--
-- Measures the cost of reading and writing: every bid, unchanged.
--
-- Output: Parquet in workspace/output/nexmark/q0/.
-- Feed it: driver produce --nexmark, or make the tables below STORED AS
-- NEXMARK to generate the events in the tasks (see README.md).

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

CREATE EXTERNAL TABLE q0_out
STORED AS PARQUET
LOCATION 'output/nexmark/q0/';

SET spate.trigger.interval = '1s';

INSERT INTO q0_out
SELECT auction, bidder, price, "dateTime", extra FROM bid;
