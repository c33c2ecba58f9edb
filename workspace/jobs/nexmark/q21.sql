-- Nexmark Q21: Add channel id.
--
-- Each bid with its channel's id: a number for the four big channels, the
-- url's channel_id for the others (bids of neither are left out).
--
-- Translation: Flink's REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2) is
-- regexp_match(url, '(&|^)channel_id=([^&]*)')[2]: DataFusion's list holds
-- the capture groups, from 1.
--
-- Output: Parquet in workspace/output/nexmark/q21/.
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

CREATE EXTERNAL TABLE q21_out
STORED AS PARQUET
LOCATION 'output/nexmark/q21/';

SET spate.trigger.interval = '1s';

INSERT INTO q21_out
SELECT auction, bidder, price, channel,
       CASE
           WHEN lower(channel) = 'apple' THEN '0'
           WHEN lower(channel) = 'google' THEN '1'
           WHEN lower(channel) = 'facebook' THEN '2'
           WHEN lower(channel) = 'baidu' THEN '3'
           ELSE regexp_match(url, '(&|^)channel_id=([^&]*)')[2]
       END AS channel_id
FROM bid
WHERE regexp_match(url, '(&|^)channel_id=([^&]*)')[2] IS NOT NULL
   OR lower(channel) IN ('apple', 'google', 'facebook', 'baidu');
