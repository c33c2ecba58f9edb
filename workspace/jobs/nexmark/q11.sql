-- Nexmark Q11: User sessions.
--
-- How many bids each bidder makes in a session: bids at most 10 seconds
-- apart.
--
-- Translation: Flink's SESSION(B.dateTime, INTERVAL '10' SECOND) is
-- session_window("dateTime", '10 seconds'); SESSION_START and SESSION_END
-- are session_window.start and session_window.end, as in Spark. A session
-- is written once, when the watermark passes its end.
--
-- Output: Parquet in workspace/output/nexmark/q11/.
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

CREATE EXTERNAL TABLE q11_out
STORED AS PARQUET
LOCATION 'output/nexmark/q11/';

SET spate.trigger.interval = '1s';

INSERT INTO q11_out
SELECT bidder, count(*) AS bid_count, session_window.start AS starttime, session_window.end AS endtime
FROM bid
GROUP BY bidder, session_window("dateTime", '10 seconds');
