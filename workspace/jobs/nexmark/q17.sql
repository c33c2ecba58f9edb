-- Nexmark Q17: Auction statistics report.
--
-- Per auction and day: the number of bids, of cheap, medium and expensive
-- ones, and the lowest, highest, average and total price.
--
-- Translation: Flink groups by DATE_FORMAT(dateTime, 'yyyy-MM-dd') and
-- updates each day's row as bids come; here the day is window("dateTime",
-- '1 day') and each day's rows are written once, when the watermark passes
-- midnight.
--
-- Output: Parquet in workspace/output/nexmark/q17/.
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

CREATE EXTERNAL TABLE q17_out
STORED AS PARQUET
LOCATION 'output/nexmark/q17/';

SET spate.trigger.interval = '1s';

INSERT INTO q17_out
SELECT auction,
       window.start AS day,
       count(*) AS total_bids,
       count(*) FILTER (WHERE price < 10000) AS rank1_bids,
       count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids,
       count(*) FILTER (WHERE price >= 1000000) AS rank3_bids,
       min(price) AS min_price,
       max(price) AS max_price,
       avg(price) AS avg_price,
       sum(price) AS sum_price
FROM bid
GROUP BY auction, window("dateTime", '1 day');
