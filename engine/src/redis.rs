//! Redis as a sink: `CREATE EXTERNAL TABLE totals STORED AS REDIS LOCATION
//! 'redis://localhost:6379/0' OPTIONS ('key' 'id', 'key_prefix' 'totals:')`.
//! Each row becomes a hash at `key_prefix` + the key columns' values
//! (joined by ':'), one field per column; a NULL removes its field. Meant
//! for update and complete output modes: the latest total per id.
//!
//! Exactly once: a task writes its rows and records its batch for its
//! partition in one Lua script, which Redis runs atomically, and which
//! skips a batch the partition already applied. A batch re-run after a
//! failure (with exactly its ranges, so exactly its rows) changes nothing.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::CreateExternalTable;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::sink::{
    Attempt, Sink, SinkOnly, SinkOnlyTable, SinkPart, SinkSpec, check_columns_exist, column_list,
};

/// A Redis sink as planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisSinkSpec {
    /// `redis://[user:password@]host:port/db`.
    pub url: String,
    /// The table's name in the job's SQL; names its progress record.
    pub table: String,
    /// The columns whose values make a row's key.
    pub key_columns: Vec<String>,
    pub key_prefix: String,
}

const KNOWN_OPTIONS: &str = "key (the columns whose values make the key, e.g. 'id' or 'region,id'), key_prefix (default '<table>:')";

/// Builds Redis tables from `CREATE EXTERNAL TABLE ... STORED AS REDIS`.
#[derive(Debug)]
pub struct RedisTableFactory;

#[async_trait]
impl TableProviderFactory for RedisTableFactory {
    async fn create(
        &self,
        _state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> DfResult<Arc<dyn TableProvider>> {
        let table = cmd.name.to_string();
        let url = crate::files::single_location(&table, &cmd.locations)?.to_string();
        if let Err(e) = redis::Client::open(url.as_str()) {
            return Err(EngineError::plan(format!(
                "table '{table}': LOCATION '{}' is no Redis URL ({e}); write it as 'redis://host:6379/0'",
                crate::sink::without_password(&url)
            ))
            .into());
        }
        let mut key_columns = Vec::new();
        let mut key_prefix = format!("{table}:");
        for (key, value) in &cmd.options {
            match key.strip_prefix("format.").unwrap_or(key) {
                "key" => key_columns = column_list(value),
                "key_prefix" => key_prefix = value.clone(),
                other => {
                    return Err(EngineError::plan(format!(
                        "table '{table}': unknown option '{other}' for STORED AS REDIS; known options: {KNOWN_OPTIONS}"
                    ))
                    .into());
                }
            }
        }
        if key_columns.is_empty() {
            return Err(EngineError::plan(format!(
                "table '{table}': a Redis table needs OPTIONS ('key' '<column>'): the columns whose values make each row's key"
            ))
            .into());
        }
        let spec = RedisSinkSpec {
            url,
            table,
            key_columns,
            key_prefix,
        };
        Ok(Arc::new(RedisTable::new(
            spec,
            Arc::new(cmd.schema.as_arrow().clone()),
        )?))
    }
}

impl SinkOnly for RedisSinkSpec {
    fn cannot_read(&self) -> String {
        format!(
            "table '{}' is a Redis sink: read it with redis-cli (HGETALL {}<key>), not with SQL",
            self.table, self.key_prefix
        )
    }

    fn check(&self, columns: &Schema) -> Result<()> {
        check_columns_exist(&self.table, "key", &self.key_columns, columns)
    }
}

/// A Redis database as a job's sink; it cannot be read with SQL.
pub type RedisTable = SinkOnlyTable<RedisSinkSpec>;

/// Writes one partition's rows of a batch, unless the partition applied
/// that batch already. KEYS[1]: the job's progress hash. ARGV: partition,
/// batch, the number of columns n, their names, then per row its key and
/// n values, each `v<value>` or `n` for NULL.
const WRITE_ROWS: &str = r#"
local done = redis.call('HGET', KEYS[1], ARGV[1])
if done and tonumber(done) >= tonumber(ARGV[2]) then
  return 0
end
local n = tonumber(ARGV[3])
local i = 4 + n
while i <= #ARGV do
  local key = ARGV[i]
  local set, unset = {}, {}
  for c = 1, n do
    local value = ARGV[i + c]
    if string.sub(value, 1, 1) == 'v' then
      set[#set + 1] = ARGV[3 + c]
      set[#set + 1] = string.sub(value, 2)
    else
      unset[#unset + 1] = ARGV[3 + c]
    end
  end
  if #set > 0 then redis.call('HSET', key, unpack(set)) end
  if #unset > 0 then redis.call('HDEL', key, unpack(unset)) end
  i = i + n + 1
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"#;

/// One connection per Redis server and process; it multiplexes the tasks.
static CONNECTIONS: LazyLock<Mutex<HashMap<String, MultiplexedConnection>>> =
    LazyLock::new(Mutex::default);

async fn connection(url: &str) -> Result<MultiplexedConnection> {
    if let Some(c) = CONNECTIONS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(url)
    {
        return Ok(c.clone());
    }
    let client = redis::Client::open(url).map_err(|e| redis_error(url, e))?;
    let connection = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| redis_error(url, e))?;
    CONNECTIONS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(url.to_string(), connection.clone());
    Ok(connection)
}

/// A Redis error as an execution error: running again may succeed.
fn redis_error(url: &str, e: redis::RedisError) -> EngineError {
    if e.is_connection_dropped() || e.is_io_error() {
        CONNECTIONS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(url);
    }
    EngineError::execution(format!(
        "redis ({}): {e}",
        crate::sink::without_password(url)
    ))
}

/// The job's progress hash: which batch each partition applied last.
fn progress_key(job: &str, table: &str) -> String {
    format!("spate:progress:{job}:{table}")
}

#[derive(Debug)]
pub struct RedisSink {
    pub spec: RedisSinkSpec,
    pub job: String,
}

#[async_trait]
impl Sink for RedisSink {
    async fn write(
        &self,
        attempt: &Attempt,
        schema: SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<SinkPart> {
        let keys: Vec<usize> = self
            .spec
            .key_columns
            .iter()
            .map(|k| schema.index_of(k))
            .collect::<std::result::Result<_, _>>()?;
        let script = redis::Script::new(WRITE_ROWS);
        let mut call = script.key(progress_key(&self.job, &self.spec.table));
        let columns = schema.fields().len();
        call.arg(attempt.task_index).arg(attempt.batch).arg(columns);
        for field in schema.fields() {
            call.arg(field.name());
        }
        let options = FormatOptions::default();
        let mut rows = 0u64;
        let mut key = String::new();
        let mut value = String::new();
        for batch in batches {
            let formatters: Vec<ArrayFormatter> = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<std::result::Result<_, _>>()?;
            for row in 0..batch.num_rows() {
                key.clear();
                key.push_str(&self.spec.key_prefix);
                for (n, column) in keys.iter().enumerate() {
                    if n > 0 {
                        key.push(':');
                    }
                    use std::fmt::Write;
                    let _ = write!(key, "{}", formatters[*column].value(row));
                }
                call.arg(&key);
                for (column, formatter) in formatters.iter().enumerate() {
                    if batch.column(column).is_null(row) {
                        call.arg("n");
                    } else {
                        use std::fmt::Write;
                        value.clear();
                        value.push('v');
                        let _ = write!(value, "{}", formatter.value(row));
                        call.arg(&value);
                    }
                }
                rows += 1;
            }
        }
        let mut connection = connection(&self.spec.url).await?;
        let _applied: i64 = call
            .invoke_async(&mut connection)
            .await
            .map_err(|e| redis_error(&self.spec.url, e))?;
        // The rows are in Redis once, whether this attempt wrote them or an
        // earlier one did.
        Ok(SinkPart {
            files: Vec::new(),
            rows,
        })
    }

    /// A fresh start applies batch 0 again, so the progress goes.
    async fn reset(&self) -> Result<()> {
        let mut connection = connection(&self.spec.url).await?;
        redis::cmd("DEL")
            .arg(progress_key(&self.job, &self.spec.table))
            .query_async::<()>(&mut connection)
            .await
            .map_err(|e| redis_error(&self.spec.url, e))
    }

    fn describe(&self) -> String {
        SinkSpec::Redis(self.spec.clone()).describe()
    }
}
