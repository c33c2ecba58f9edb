-- Nexmark Q22: Get URL directories.
--
-- The first three directories of each bid's url.
--
-- Translation: Flink's SPLIT_INDEX(url, '/', 3) counts from 0;
-- split_part(url, '/', 4) counts from 1.
--
-- Output: Parquet in workspace/output/nexmark/q22/.
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

CREATE EXTERNAL TABLE q22_out
STORED AS PARQUET
LOCATION 'output/nexmark/q22/';

SET spate.trigger.interval = '1s';

INSERT INTO q22_out
SELECT auction, bidder, price, channel,
       split_part(url, '/', 4) AS dir1,
       split_part(url, '/', 5) AS dir2,
       split_part(url, '/', 6) AS dir3
FROM bid;
