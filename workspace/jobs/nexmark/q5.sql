-- Nexmark Q5: Hot items.
--
-- The auctions with the most bids in each sliding window of 10 seconds,
-- every 2 seconds.
--
-- Translation: Flink's HOP(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '2'
-- SECOND, INTERVAL '10' SECOND) is window("dateTime", '10 seconds',
-- '2 seconds'). The suite joins the per-window counts with their maximum,
-- a second aggregation of the same stream; here the same rows come from
-- RANK() = 1 per window (ties included, as the join's num >= maxn keeps
-- them), Flink's own window top-N. Each window's ranking runs once, when
-- the watermark closes it.
--
-- Output: Parquet in workspace/output/nexmark/q5/.
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

CREATE EXTERNAL TABLE q5_out
STORED AS PARQUET
LOCATION 'output/nexmark/q5/';

SET spate.trigger.interval = '1s';

INSERT INTO q5_out
SELECT auction, num
FROM (
    SELECT auction, num, RANK() OVER (PARTITION BY starttime ORDER BY num DESC) AS r
    FROM (
        SELECT auction, count(*) AS num, window.start AS starttime
        FROM bid
        GROUP BY auction, window("dateTime", '10 seconds', '2 seconds')
    )
)
WHERE r = 1;
