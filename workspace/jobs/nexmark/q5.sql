-- Nexmark Q5: Hot items.
--
-- The auctions with the most bids in each sliding window of 10 seconds,
-- every 2 seconds.
--
-- Translation: Flink's HOP(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '2'
-- SECOND, INTERVAL '10' SECOND) is window("dateTime", '10 seconds', '2
-- seconds'); the query aggregates per window twice and joins the two.
--
-- Output: Parquet in workspace/output/nexmark/q5/.
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

CREATE EXTERNAL TABLE q5_out
STORED AS PARQUET
LOCATION 'output/nexmark/q5/';

SET spate.trigger.interval = '1s';

INSERT INTO q5_out
SELECT AuctionBids.auction, AuctionBids.num
FROM (
    SELECT auction, count(*) AS num, window.start AS starttime, window.end AS endtime
    FROM bid
    GROUP BY auction, window("dateTime", '10 seconds', '2 seconds')
) AS AuctionBids
JOIN (
    SELECT max(CountBids.num) AS maxn, CountBids.starttime, CountBids.endtime
    FROM (
        SELECT count(*) AS num, window.start AS starttime, window.end AS endtime
        FROM bid
        GROUP BY auction, window("dateTime", '10 seconds', '2 seconds')
    ) AS CountBids
    GROUP BY CountBids.starttime, CountBids.endtime
) AS MaxBids
ON AuctionBids.starttime = MaxBids.starttime
    AND AuctionBids.endtime = MaxBids.endtime
    AND AuctionBids.num >= MaxBids.maxn;
