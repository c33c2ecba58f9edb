-- Running revenue per customer id, kept in Redis: after every batch, each
-- id that sold gets its new total and number of sales in the hash
-- revenue:<id> (update output mode). Exactly once: a batch run again after a
-- failure changes nothing.
--
-- Feed it: driver produce --topic sales
-- With docker-compose (its redis service), look at the result:
--   docker-compose exec redis redis-cli KEYS 'revenue:*'
--   docker-compose exec redis redis-cli HGETALL revenue:42
-- Elsewhere, point LOCATION at your Redis: 'redis://host:6379/0'.

CREATE EXTERNAL TABLE sales (
    id BIGINT,
    customer VARCHAR,
    revenue DOUBLE
)
STORED AS KAFKA
LOCATION 'sales';

-- No columns: the table takes the query's (id, customer, total_revenue, sales).
CREATE EXTERNAL TABLE revenue_by_id
STORED AS REDIS
LOCATION 'redis://redis:6379/0'
OPTIONS ('key' 'id', 'key_prefix' 'revenue:');

SET spate.trigger.interval = '1s';
SET spate.output_mode = 'update';

INSERT INTO revenue_by_id
SELECT id, max(customer) AS customer, sum(revenue) AS total_revenue, count(*) AS sales
FROM sales
GROUP BY id;
