-- Running revenue per customer id, kept in PostgreSQL: after every batch,
-- each id that sold gets its new total and number of sales in the table
-- revenue_by_id, upserted by its primary key (update output mode). Spate
-- creates the table from the query's columns when it does not exist.
-- Exactly once: a batch run again after a failure changes nothing.
--
-- Feed it: driver produce --topic sales
-- With docker-compose (its postgres service), look at the result:
--   docker-compose exec postgres psql -U spate -c 'SELECT * FROM revenue_by_id ORDER BY total_revenue DESC LIMIT 10'
-- Elsewhere, point LOCATION at your database:
--   'postgresql://user:password@host:5432/database'

CREATE EXTERNAL TABLE sales (
    id BIGINT,
    customer VARCHAR,
    revenue DOUBLE
)
STORED AS KAFKA
LOCATION 'sales';

CREATE EXTERNAL TABLE revenue_by_id
STORED AS POSTGRES
LOCATION 'postgresql://spate:spate@postgres:5432/spate'
OPTIONS ('table' 'revenue_by_id', 'primary_key' 'id');

SET spate.trigger.interval = '1s';
SET spate.output_mode = 'update';

INSERT INTO revenue_by_id
SELECT id, max(customer) AS customer, sum(revenue) AS total_revenue, count(*) AS sales
FROM sales
GROUP BY id;
