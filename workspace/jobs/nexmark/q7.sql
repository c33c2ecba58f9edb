-- Nexmark Q7: Highest bid.
--
-- The highest bids of each 10-second window.
--
-- Translation: Flink's TUMBLE(TABLE bid, DESCRIPTOR(dateTime), INTERVAL
-- '10' SECOND) is window("dateTime", '10 seconds'); the stream joins its
-- own windowed maximum. The maximum comes out once the watermark closes
-- its window; a bid is kept until the watermark is 10 seconds past it (no
-- later window can take it), a window's maximum until the watermark
-- passes its end: the state holds about two windows of bids.
--
-- Output: Parquet in workspace/output/nexmark/q7/.
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

CREATE EXTERNAL TABLE q7_out
STORED AS PARQUET
LOCATION 'output/nexmark/q7/';

SET spate.trigger.interval = '1s';

INSERT INTO q7_out
SELECT B.auction, B.price, B.bidder, B."dateTime", B.extra
FROM bid B
JOIN (
    SELECT MAX(price) AS maxprice, window.end AS "dateTime"
    FROM bid
    GROUP BY window("dateTime", '10 seconds')
) B1
ON B.price = B1.maxprice
WHERE B."dateTime" BETWEEN B1."dateTime" - INTERVAL '10' SECOND AND B1."dateTime";
