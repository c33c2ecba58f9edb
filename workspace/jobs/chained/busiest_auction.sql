-- Two aggregations chained: bids per auction per 10-second window, then
-- per window the most bids any auction got and how many auctions had
-- bids (Spark 3.4's chained stateful operators, Flink's per-window
-- aggregation over a window aggregation).
--
-- The first aggregation passes on each window when the watermark closes
-- it, whole, so the second closes that window in the same batch: the job
-- writes each window once. Each keeps its own state in the checkpoint
-- (operators 1 and 2).
--
-- Output: Parquet in workspace/output/chained/busiest_auction/.
-- Feed it: driver produce --nexmark

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

CREATE EXTERNAL TABLE busiest_auction
STORED AS PARQUET
LOCATION 'output/chained/busiest_auction/';

SET spate.trigger.interval = '1s';

INSERT INTO busiest_auction
SELECT starttime, endtime, MAX(num) AS most_bids, COUNT(*) AS auctions
FROM (
    SELECT auction, window.start AS starttime, window.end AS endtime, COUNT(*) AS num
    FROM bid
    GROUP BY auction, window("dateTime", '10 seconds')
) AS per_auction
GROUP BY starttime, endtime;
