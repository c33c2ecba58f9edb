//! PostgreSQL as a sink: `CREATE EXTERNAL TABLE totals STORED AS POSTGRES
//! LOCATION 'postgresql://user:password@host:5432/db' OPTIONS ('table'
//! 'revenue_by_id', 'primary_key' 'id')`. With a primary key, rows are
//! upserts (`INSERT ... ON CONFLICT (key) DO UPDATE`), for update and
//! complete output modes; without one, rows are appended with `COPY`. The
//! table is created from the sink's columns when it does not exist.
//!
//! Exactly once: a task writes its rows and its progress row (job, sink,
//! partition, batch) in one transaction, which first locks that progress
//! row and skips a batch the partition applied already.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, LazyLock, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, RecordBatch, StringArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Schema,
    SchemaRef, TimeUnit,
};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::CreateExternalTable;
use serde::{Deserialize, Serialize};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls};

use crate::error::{EngineError, Result};
use crate::sink::{
    Attempt, Sink, SinkOnly, SinkOnlyTable, SinkPart, check_columns_exist, column_list,
    without_password,
};

/// A PostgreSQL sink as planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostgresSinkSpec {
    /// `postgresql://user[:password]@host:port/db`.
    pub url: String,
    /// The table's name in the job's SQL; names its progress rows.
    pub sink: String,
    /// The table written in PostgreSQL, as given (`schema.table` or `table`).
    pub table: String,
    /// Upserts on these columns; none: rows are appended.
    pub primary_key: Vec<String>,
}

const KNOWN_OPTIONS: &str = "table (the PostgreSQL table, default the SQL table's name), primary_key (columns to upsert on, e.g. 'id' or 'region,id'; without it rows are appended)";

/// Builds PostgreSQL tables from `CREATE EXTERNAL TABLE ... STORED AS POSTGRES`.
#[derive(Debug)]
pub struct PostgresTableFactory;

#[async_trait]
impl TableProviderFactory for PostgresTableFactory {
    async fn create(
        &self,
        _state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> DfResult<Arc<dyn TableProvider>> {
        let sink = cmd.name.to_string();
        let url = crate::files::single_location(&sink, &cmd.locations)?.to_string();
        if let Err(e) = tokio_postgres::Config::from_str(&url) {
            return Err(EngineError::plan(format!(
                "table '{sink}': LOCATION '{}' is no PostgreSQL URL ({e}); write it as 'postgresql://user:password@host:5432/db'",
                without_password(&url)
            ))
            .into());
        }
        let mut table = sink.clone();
        let mut primary_key = Vec::new();
        for (key, value) in &cmd.options {
            match key.strip_prefix("format.").unwrap_or(key) {
                "table" => table = value.clone(),
                "primary_key" | "key" => primary_key = column_list(value),
                other => {
                    return Err(EngineError::plan(format!(
                        "table '{sink}': unknown option '{other}' for STORED AS POSTGRES; known options: {KNOWN_OPTIONS}"
                    ))
                    .into());
                }
            }
        }
        let spec = PostgresSinkSpec {
            url,
            sink,
            table,
            primary_key,
        };
        Ok(Arc::new(PostgresTable::new(
            spec,
            Arc::new(cmd.schema.as_arrow().clone()),
        )?))
    }
}

impl SinkOnly for PostgresSinkSpec {
    fn cannot_read(&self) -> String {
        format!(
            "table '{}' is a PostgreSQL sink: read it with psql (SELECT * FROM {}), not with Spate",
            self.sink, self.table
        )
    }

    fn check(&self, columns: &Schema) -> Result<()> {
        check_columns_exist(&self.sink, "primary key", &self.primary_key, columns)
    }
}

/// A PostgreSQL table as a job's sink; read it with psql.
pub type PostgresTable = SinkOnlyTable<PostgresSinkSpec>;

/// Idle connections per server, kept between tasks of one process.
static IDLE: LazyLock<Mutex<HashMap<String, Vec<Client>>>> = LazyLock::new(Mutex::default);

/// Tables this process made sure exist, per server.
static CREATED: LazyLock<Mutex<HashSet<(String, String)>>> = LazyLock::new(Mutex::default);

/// Idle connections kept per server; more are closed.
const IDLE_PER_SERVER: usize = 8;

fn pg_error(url: &str, e: tokio_postgres::Error) -> EngineError {
    let detail = e
        .as_db_error()
        .map_or_else(|| e.to_string(), |db| db.message().to_string());
    EngineError::execution(format!("postgres ({}): {detail}", without_password(url)))
}

async fn take(url: &str) -> Result<Client> {
    loop {
        let idle = IDLE
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(url)
            .and_then(Vec::pop);
        match idle {
            Some(client) if !client.is_closed() => return Ok(client),
            Some(_) => continue,
            None => break,
        }
    }
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| pg_error(url, e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("a PostgreSQL connection ended: {e}");
        }
    });
    Ok(client)
}

fn give_back(url: &str, client: Client) {
    let mut idle = IDLE.lock().unwrap_or_else(|p| p.into_inner());
    let kept = idle.entry(url.to_string()).or_default();
    if kept.len() < IDLE_PER_SERVER && !client.is_closed() {
        kept.push(client);
    }
}

/// An identifier, quoted: `"name"`; `schema.table` quotes each part.
fn quoted(name: &str) -> String {
    name.split('.')
        .map(|part| format!("\"{}\"", part.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

/// How a column travels to PostgreSQL: the SQL type of the table's column,
/// and the type its values are sent as (text for what the client crate
/// does not map, cast on the server).
fn pg_type(data_type: &DataType) -> (&'static str, Type) {
    match data_type {
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => ("SMALLINT", Type::INT2),
        DataType::Int32 | DataType::UInt16 => ("INTEGER", Type::INT4),
        DataType::Int64 | DataType::UInt32 => ("BIGINT", Type::INT8),
        DataType::Float32 => ("REAL", Type::FLOAT4),
        DataType::Float64 => ("DOUBLE PRECISION", Type::FLOAT8),
        DataType::Boolean => ("BOOLEAN", Type::BOOL),
        DataType::Date32 | DataType::Date64 => ("DATE", Type::DATE),
        DataType::Timestamp(_, None) => ("TIMESTAMP", Type::TIMESTAMP),
        DataType::Timestamp(_, Some(_)) => ("TIMESTAMPTZ", Type::TIMESTAMPTZ),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => ("BYTEA", Type::BYTEA),
        DataType::UInt64 | DataType::Decimal128(..) | DataType::Decimal256(..) => {
            ("NUMERIC", Type::TEXT)
        }
        _ => ("TEXT", Type::TEXT),
    }
}

/// One column's values, typed as they are sent.
enum Values {
    I16(Vec<Option<i16>>),
    I32(Vec<Option<i32>>),
    I64(Vec<Option<i64>>),
    F32(Vec<Option<f32>>),
    F64(Vec<Option<f64>>),
    Bool(Vec<Option<bool>>),
    Date(Vec<Option<NaiveDate>>),
    Timestamp(Vec<Option<NaiveDateTime>>),
    TimestampTz(Vec<Option<DateTime<Utc>>>),
    Bytes(Vec<Option<Vec<u8>>>),
    Text(Vec<Option<String>>),
}

impl Values {
    fn of(array: &ArrayRef, rows: &[usize]) -> Result<Values> {
        let pick = |cast_to: &DataType| -> Result<ArrayRef> { Ok(cast(array, cast_to)?) };
        Ok(match pg_type(array.data_type()).1 {
            Type::INT2 => {
                let a = pick(&DataType::Int16)?;
                let a = a.as_primitive::<Int16Type>();
                Values::I16(
                    rows.iter()
                        .map(|r| a.is_valid(*r).then(|| a.value(*r)))
                        .collect(),
                )
            }
            Type::INT4 => {
                let a = pick(&DataType::Int32)?;
                let a = a.as_primitive::<Int32Type>();
                Values::I32(
                    rows.iter()
                        .map(|r| a.is_valid(*r).then(|| a.value(*r)))
                        .collect(),
                )
            }
            Type::INT8 => {
                let a = pick(&DataType::Int64)?;
                let a = a.as_primitive::<Int64Type>();
                Values::I64(
                    rows.iter()
                        .map(|r| a.is_valid(*r).then(|| a.value(*r)))
                        .collect(),
                )
            }
            Type::FLOAT4 => {
                let a = array.as_primitive::<Float32Type>();
                Values::F32(
                    rows.iter()
                        .map(|r| a.is_valid(*r).then(|| a.value(*r)))
                        .collect(),
                )
            }
            Type::FLOAT8 => {
                let a = array.as_primitive::<Float64Type>();
                Values::F64(
                    rows.iter()
                        .map(|r| a.is_valid(*r).then(|| a.value(*r)))
                        .collect(),
                )
            }
            Type::BOOL => {
                let a = array
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .expect("boolean");
                Values::Bool(
                    rows.iter()
                        .map(|r| a.is_valid(*r).then(|| a.value(*r)))
                        .collect(),
                )
            }
            Type::DATE => {
                let a = pick(&DataType::Date32)?;
                let a = a.as_primitive::<Date32Type>();
                Values::Date(
                    rows.iter()
                        .map(|r| a.is_valid(*r).then(|| a.value_as_date(*r)).flatten())
                        .collect(),
                )
            }
            Type::TIMESTAMP | Type::TIMESTAMPTZ => {
                let micros = pick(&DataType::Timestamp(TimeUnit::Microsecond, None))?;
                let a =
                    micros.as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
                let at = |r: usize| {
                    a.is_valid(r)
                        .then(|| DateTime::<Utc>::from_timestamp_micros(a.value(r)))
                        .flatten()
                };
                if pg_type(array.data_type()).1 == Type::TIMESTAMP {
                    Values::Timestamp(rows.iter().map(|r| at(*r).map(|t| t.naive_utc())).collect())
                } else {
                    Values::TimestampTz(rows.iter().map(|r| at(*r)).collect())
                }
            }
            Type::BYTEA => {
                let a = pick(&DataType::Binary)?;
                let a = a.as_any().downcast_ref::<BinaryArray>().expect("binary");
                Values::Bytes(
                    rows.iter()
                        .map(|r| a.is_valid(*r).then(|| a.value(*r).to_vec()))
                        .collect(),
                )
            }
            _ => match array.data_type() {
                DataType::Utf8 => {
                    let a = array.as_any().downcast_ref::<StringArray>().expect("utf8");
                    Values::Text(
                        rows.iter()
                            .map(|r| a.is_valid(*r).then(|| a.value(*r).to_string()))
                            .collect(),
                    )
                }
                _ => {
                    let formatter =
                        ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default())?;
                    Values::Text(
                        rows.iter()
                            .map(|r| array.is_valid(*r).then(|| formatter.value(*r).to_string()))
                            .collect(),
                    )
                }
            },
        })
    }

    /// The whole column, as one array parameter.
    fn as_param(&self) -> &(dyn ToSql + Sync) {
        match self {
            Values::I16(v) => v,
            Values::I32(v) => v,
            Values::I64(v) => v,
            Values::F32(v) => v,
            Values::F64(v) => v,
            Values::Bool(v) => v,
            Values::Date(v) => v,
            Values::Timestamp(v) => v,
            Values::TimestampTz(v) => v,
            Values::Bytes(v) => v,
            Values::Text(v) => v,
        }
    }

    /// One row's value.
    fn at(&self, row: usize) -> &(dyn ToSql + Sync) {
        match self {
            Values::I16(v) => &v[row],
            Values::I32(v) => &v[row],
            Values::I64(v) => &v[row],
            Values::F32(v) => &v[row],
            Values::F64(v) => &v[row],
            Values::Bool(v) => &v[row],
            Values::Date(v) => &v[row],
            Values::Timestamp(v) => &v[row],
            Values::TimestampTz(v) => &v[row],
            Values::Bytes(v) => &v[row],
            Values::Text(v) => &v[row],
        }
    }
}

#[derive(Debug)]
pub struct PostgresSink {
    pub spec: PostgresSinkSpec,
    pub job: String,
}

impl PostgresSink {
    /// Creates the progress table and the sink's table where they are
    /// missing, once per process; an advisory lock keeps tasks that start
    /// together from creating one table twice.
    async fn ensure_tables(&self, client: &mut Client, schema: &Schema) -> Result<()> {
        let url = &self.spec.url;
        let created = (url.clone(), self.spec.table.clone());
        if CREATED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&created)
        {
            return Ok(());
        }
        let columns: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| format!("{} {}", quoted(f.name()), pg_type(f.data_type()).0))
            .collect();
        let key = if self.spec.primary_key.is_empty() {
            String::new()
        } else {
            let key: Vec<String> = self.spec.primary_key.iter().map(|k| quoted(k)).collect();
            format!(", PRIMARY KEY ({})", key.join(", "))
        };
        let tx = client.transaction().await.map_err(|e| pg_error(url, e))?;
        let statements = [
            "SELECT pg_advisory_xact_lock(7470697465)".to_string(),
            "CREATE TABLE IF NOT EXISTS spate_progress (job TEXT NOT NULL, sink TEXT NOT NULL, part INTEGER NOT NULL, batch BIGINT NOT NULL, PRIMARY KEY (job, sink, part))".to_string(),
            format!(
                "CREATE TABLE IF NOT EXISTS {} ({}{key})",
                quoted(&self.spec.table),
                columns.join(", ")
            ),
        ];
        for statement in &statements {
            tx.batch_execute(statement)
                .await
                .map_err(|e| pg_error(url, e))?;
        }
        tx.commit().await.map_err(|e| pg_error(url, e))?;
        CREATED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(created);
        Ok(())
    }

    /// The rows to write: all of them, or, for upserts, the last of each
    /// key (one statement may not update a row twice).
    fn rows(&self, batch: &RecordBatch) -> Result<Vec<usize>> {
        if self.spec.primary_key.is_empty() {
            return Ok((0..batch.num_rows()).collect());
        }
        let keys: Vec<ArrayFormatter> = self
            .spec
            .primary_key
            .iter()
            .map(|k| {
                let column = batch.column(batch.schema().index_of(k)?);
                Ok(ArrayFormatter::try_new(
                    column.as_ref(),
                    &FormatOptions::default(),
                )?)
            })
            .collect::<Result<_>>()?;
        let mut last = HashMap::new();
        for row in 0..batch.num_rows() {
            let key: Vec<String> = keys.iter().map(|k| k.value(row).to_string()).collect();
            last.insert(key, row);
        }
        let mut rows: Vec<usize> = last.into_values().collect();
        rows.sort_unstable();
        Ok(rows)
    }
}

#[async_trait]
impl Sink for PostgresSink {
    async fn write(
        &self,
        attempt: &Attempt,
        schema: SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<SinkPart> {
        let url = &self.spec.url;
        let mut client = take(url).await?;
        self.ensure_tables(&mut client, &schema).await?;
        let tx = client.transaction().await.map_err(|e| pg_error(url, e))?;
        let part = attempt.task_index as i32;
        let batch_id = attempt.batch as i64;
        tx.execute(
            "INSERT INTO spate_progress (job, sink, part, batch) VALUES ($1, $2, $3, -1) ON CONFLICT DO NOTHING",
            &[&self.job, &self.spec.sink, &part],
        )
        .await
        .map_err(|e| pg_error(url, e))?;
        let done: i64 = tx
            .query_one(
                "SELECT batch FROM spate_progress WHERE job = $1 AND sink = $2 AND part = $3 FOR UPDATE",
                &[&self.job, &self.spec.sink, &part],
            )
            .await
            .map_err(|e| pg_error(url, e))?
            .get(0);
        let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        if done >= batch_id {
            // An earlier attempt of this batch wrote this partition.
            drop(tx);
            give_back(url, client);
            return Ok(SinkPart {
                files: Vec::new(),
                rows,
            });
        }
        let table = quoted(&self.spec.table);
        let names: Vec<String> = schema.fields().iter().map(|f| quoted(f.name())).collect();
        for batch in batches.iter().filter(|b| b.num_rows() > 0) {
            let chosen = self.rows(batch)?;
            let columns: Vec<Values> = batch
                .columns()
                .iter()
                .map(|c| Values::of(c, &chosen))
                .collect::<Result<_>>()?;
            if self.spec.primary_key.is_empty() {
                let types: Vec<Type> = schema
                    .fields()
                    .iter()
                    .map(|f| pg_type(f.data_type()).1)
                    .collect();
                let sink = tx
                    .copy_in(&format!(
                        "COPY {table} ({}) FROM STDIN (FORMAT binary)",
                        names.join(", ")
                    ))
                    .await
                    .map_err(|e| pg_error(url, e))?;
                let writer = BinaryCopyInWriter::new(sink, &types);
                futures::pin_mut!(writer);
                let mut row: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(columns.len());
                for r in 0..chosen.len() {
                    row.clear();
                    row.extend(columns.iter().map(|c| c.at(r)));
                    writer
                        .as_mut()
                        .write(&row)
                        .await
                        .map_err(|e| pg_error(url, e))?;
                }
                writer.finish().await.map_err(|e| pg_error(url, e))?;
            } else {
                let arrays: Vec<String> = schema
                    .fields()
                    .iter()
                    .enumerate()
                    .map(|(i, f)| {
                        let sent = pg_type(f.data_type()).1;
                        let sent_as = if sent == Type::TEXT {
                            "text"
                        } else {
                            sql_array_type(&sent)
                        };
                        format!("${}::{}[]", i + 1, sent_as)
                    })
                    .collect();
                let selected: Vec<String> = schema
                    .fields()
                    .iter()
                    .enumerate()
                    .map(|(i, f)| format!("c{i}::{}", pg_type(f.data_type()).0))
                    .collect();
                let aliases: Vec<String> = (0..names.len()).map(|i| format!("c{i}")).collect();
                let keys: Vec<String> = self.spec.primary_key.iter().map(|k| quoted(k)).collect();
                let updates: Vec<String> = names
                    .iter()
                    .filter(|n| !keys.contains(n))
                    .map(|n| format!("{n} = EXCLUDED.{n}"))
                    .collect();
                let on_conflict = if updates.is_empty() {
                    "DO NOTHING".to_string()
                } else {
                    format!("DO UPDATE SET {}", updates.join(", "))
                };
                let statement = format!(
                    "INSERT INTO {table} ({}) SELECT {} FROM unnest({}) AS t({}) ON CONFLICT ({}) {on_conflict}",
                    names.join(", "),
                    selected.join(", "),
                    arrays.join(", "),
                    aliases.join(", "),
                    keys.join(", ")
                );
                let params: Vec<&(dyn ToSql + Sync)> =
                    columns.iter().map(Values::as_param).collect();
                tx.execute(&statement, &params)
                    .await
                    .map_err(|e| pg_error(url, e))?;
            }
        }
        tx.execute(
            "UPDATE spate_progress SET batch = $4 WHERE job = $1 AND sink = $2 AND part = $3",
            &[&self.job, &self.spec.sink, &part, &batch_id],
        )
        .await
        .map_err(|e| pg_error(url, e))?;
        tx.commit().await.map_err(|e| pg_error(url, e))?;
        give_back(url, client);
        Ok(SinkPart {
            files: Vec::new(),
            rows,
        })
    }

    /// A fresh start applies batch 0 again, so the progress rows go.
    async fn reset(&self) -> Result<()> {
        let url = &self.spec.url;
        let client = take(url).await?;
        let deleted = client
            .execute(
                "DELETE FROM spate_progress WHERE job = $1 AND sink = $2",
                &[&self.job, &self.spec.sink],
            )
            .await;
        match deleted {
            Ok(_) => {}
            // No progress table yet: nothing to forget.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {}
            Err(e) => return Err(pg_error(url, e)),
        }
        give_back(url, client);
        Ok(())
    }

    fn describe(&self) -> String {
        crate::sink::SinkSpec::Postgres(self.spec.clone()).describe()
    }
}

/// The element type name of an array parameter of `sent`.
fn sql_array_type(sent: &Type) -> &'static str {
    match *sent {
        Type::INT2 => "int2",
        Type::INT4 => "int4",
        Type::INT8 => "int8",
        Type::FLOAT4 => "float4",
        Type::FLOAT8 => "float8",
        Type::BOOL => "bool",
        Type::DATE => "date",
        Type::TIMESTAMP => "timestamp",
        Type::TIMESTAMPTZ => "timestamptz",
        Type::BYTEA => "bytea",
        _ => "text",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_part_by_part() {
        assert_eq!(quoted("public.Totals"), "\"public\".\"Totals\"");
    }
}
