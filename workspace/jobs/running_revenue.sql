-- Running revenue per customer id: after every batch, the new total and
-- number of sales of each id that sold, written to the Kafka topic
-- revenue_by_id with the id as the record key (update output mode). On a
-- compacted topic, Kafka keeps the latest total per id.
--
-- Feed it: driver produce --topic sales
-- Watch it: kcat -C -b localhost:9092 -t revenue_by_id -K ' => '

CREATE EXTERNAL TABLE sales (
    id BIGINT,
    customer VARCHAR,
    revenue DOUBLE
)
STORED AS KAFKA
LOCATION 'sales';

CREATE EXTERNAL TABLE revenue_by_id (
    id BIGINT,
    customer VARCHAR,
    total_revenue DOUBLE,
    sales BIGINT
)
STORED AS KAFKA
LOCATION 'revenue_by_id';

SET spate.trigger.interval = '1s';
SET spate.output_mode = 'update';

INSERT INTO revenue_by_id (_key, id, customer, total_revenue, sales)
SELECT CAST(id AS VARCHAR) AS key, id, max(customer), sum(revenue), count(*)
FROM sales
GROUP BY id;
