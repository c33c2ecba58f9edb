//! A job's `INSERT INTO sink SELECT ...`, before DataFusion plans it: a
//! sink declared without columns takes the query's (Spark's writeStream and
//! Arroyo do the same), and a sink that declares them is checked against
//! the query, column by column, with an error that names the one that
//! differs. DataFusion alone would cast any type into any other and fail on
//! the first value that does not fit, batches later.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema};
use datafusion::catalog::TableProvider;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    Ident, Insert, ObjectName, ObjectNamePart, Statement, TableObject,
};

use crate::error::{EngineError, Result};

/// A table a job writes: the columns it declares, and the same table with
/// the columns of the query that writes it.
pub trait SinkTable: Send + Sync {
    /// The columns the table declares, without the ones Spate adds itself
    /// (a Kafka table's `_key`, `_partition`, `_offset`, `_timestamp`).
    fn declared_columns(&self) -> Vec<FieldRef>;

    /// Columns a writer may give besides the declared ones.
    fn extra_columns(&self) -> Vec<FieldRef> {
        Vec::new()
    }

    /// This table with `columns` as its declared ones.
    fn with_columns(&self, columns: Vec<Field>) -> Result<Arc<dyn TableProvider>>;
}

/// The sink tables Spate knows.
fn as_sink_table(provider: &dyn TableProvider) -> Option<&dyn SinkTable> {
    if let Some(t) = provider.downcast_ref::<crate::files::WorkspaceTable>() {
        return Some(t);
    }
    if let Some(t) = provider.downcast_ref::<crate::kafka::KafkaTable>() {
        return Some(t);
    }
    if let Some(t) = provider.downcast_ref::<crate::sink::ConsoleTable>() {
        return Some(t);
    }
    if let Some(t) = provider.downcast_ref::<crate::redis::RedisTable>() {
        return Some(t);
    }
    if let Some(t) = provider.downcast_ref::<crate::postgres::PostgresTable>() {
        return Some(t);
    }
    None
}

/// A column name as DataFusion normalizes it: unquoted is lowercase.
fn normalized(name: &ObjectName) -> String {
    let last = name.0.last().and_then(ObjectNamePart::as_ident);
    match last {
        Some(Ident {
            value,
            quote_style: Some(_),
            ..
        }) => value.clone(),
        Some(ident) => ident.value.to_lowercase(),
        None => name.to_string(),
    }
}

/// Prepares the INSERT of a job: adopts or checks the sink's columns and,
/// for a sink whose extra columns the query leaves out, names the columns
/// it fills. Returns the statement to plan.
pub async fn prepare(ctx: &SessionContext, statement: DfStatement) -> Result<DfStatement> {
    let DfStatement::Statement(inner) = &statement else {
        return Ok(statement);
    };
    let Statement::Insert(insert) = inner.as_ref() else {
        return Ok(statement);
    };
    let (TableObject::TableName(table_name), Some(source)) = (&insert.table, &insert.source) else {
        return Ok(statement);
    };
    let table = table_name.to_string();
    let Ok(provider) = ctx.table_provider(table.as_str()).await else {
        // DataFusion says the table is missing, in its words.
        return Ok(statement);
    };
    let Some(sink) = as_sink_table(provider.as_ref()) else {
        return Ok(statement);
    };
    let query = DfStatement::Statement(Box::new(Statement::Query(source.clone())));
    let query_plan = ctx.state().statement_to_plan(query).await?;
    let given: Vec<FieldRef> = query_plan.schema().fields().iter().cloned().collect();
    let named: Vec<String> = insert.columns.iter().map(normalized).collect();
    if !named.is_empty() && named.len() != given.len() {
        return Err(EngineError::plan(format!(
            "INSERT INTO {table} names {} columns ({}) and the query gives {} ({})",
            named.len(),
            named.join(", "),
            given.len(),
            names(&given)
        )));
    }
    let declared = sink.declared_columns();
    let extra = sink.extra_columns();
    // Each column the query gives, with the name it is written under.
    let written: Vec<(String, &FieldRef)> = if named.is_empty() {
        given.iter().map(|f| (f.name().clone(), f)).collect()
    } else {
        named.iter().cloned().zip(given.iter()).collect()
    };
    if declared.is_empty() {
        let columns: Vec<Field> = written
            .iter()
            .filter(|(name, _)| !extra.iter().any(|e| e.name() == name))
            .map(|(name, field)| Field::new(name, field.data_type().clone(), true))
            .collect();
        let adopted = sink.with_columns(columns)?;
        ctx.deregister_table(table.as_str())?;
        ctx.register_table(table.as_str(), adopted)?;
        if named.is_empty() && !extra.is_empty() {
            return Ok(naming_columns(insert, &written));
        }
        return Ok(statement);
    }
    if named.is_empty()
        && written.len() != declared.len()
        && written.len() != declared.len() + extra.len()
    {
        return Err(EngineError::plan(format!(
            "INSERT INTO {table}: the table declares {} columns ({}) and the query gives {} ({}); select one expression per column, name the columns written (INSERT INTO {table} (a, b) SELECT ...), or declare the table without columns to take the query's",
            declared.len(),
            names(&declared),
            given.len(),
            names(&given)
        )));
    }
    let targets: Vec<&FieldRef> = declared.iter().chain(extra.iter()).collect();
    for (position, (name, field)) in written.iter().enumerate() {
        let target = if named.is_empty() {
            targets.get(position).copied()
        } else {
            targets.iter().copied().find(|t| t.name() == name)
        };
        let Some(target) = target else {
            return Err(EngineError::plan(format!(
                "INSERT INTO {table}: the table has no column '{name}'; it has {}",
                names(&declared)
            )));
        };
        if !fits(field.data_type(), target.data_type()) {
            return Err(EngineError::plan(format!(
                "INSERT INTO {table}: column '{}' is declared {} and the query gives '{}' as {}; declare it {}, CAST it in the query, or declare the table without columns to take the query's",
                target.name(),
                sql_type(target.data_type()),
                field.name(),
                sql_type(field.data_type()),
                sql_type(field.data_type())
            )));
        }
    }
    if named.is_empty() && written.len() == declared.len() && !extra.is_empty() {
        // The query gives the declared columns only: the extra ones stay NULL.
        return Ok(naming_columns(insert, &written_as(&declared, &written)));
    }
    Ok(statement)
}

/// The declared names in the order the query gives their values.
fn written_as<'a>(
    declared: &[FieldRef],
    written: &[(String, &'a FieldRef)],
) -> Vec<(String, &'a FieldRef)> {
    declared
        .iter()
        .zip(written)
        .map(|(d, (_, f))| (d.name().clone(), *f))
        .collect()
}

/// The INSERT with its column list named: needed where the table has
/// extra columns the query leaves out.
fn naming_columns(insert: &Insert, written: &[(String, &FieldRef)]) -> DfStatement {
    let mut insert = insert.clone();
    insert.columns = written
        .iter()
        .map(|(name, _)| {
            ObjectName(vec![ObjectNamePart::Identifier(Ident::with_quote(
                '"', name,
            ))])
        })
        .collect();
    DfStatement::Statement(Box::new(Statement::Insert(insert)))
}

fn names(fields: &[FieldRef]) -> String {
    fields
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether values of `given` are written into a column of `declared`
/// without losing anything: the same type, a wider number, any string or
/// timestamp kind. Anything else would be a cast that fails or truncates.
fn fits(given: &DataType, declared: &DataType) -> bool {
    use DataType::*;
    if given == declared || *given == Null {
        return true;
    }
    let int_width = |t: &DataType| match t {
        Int8 | UInt8 => Some(8),
        Int16 | UInt16 => Some(16),
        Int32 | UInt32 => Some(32),
        Int64 | UInt64 => Some(64),
        _ => None,
    };
    match (given, declared) {
        (Dictionary(_, value), _) => fits(value, declared),
        (Utf8 | LargeUtf8 | Utf8View, Utf8 | LargeUtf8 | Utf8View) => true,
        (Binary | LargeBinary | BinaryView, Binary | LargeBinary | BinaryView) => true,
        (Timestamp(..), Timestamp(..)) => true,
        (Date32 | Date64, Date32 | Date64 | Timestamp(..)) => true,
        (Float16 | Float32, Float32 | Float64) => true,
        (g, Float32 | Float64) if int_width(g).is_some() => true,
        (g, d) if int_width(g).is_some() && int_width(d).is_some() => int_width(g) <= int_width(d),
        (Decimal128(p, s), Decimal128(dp, ds)) => s <= ds && p - *s as u8 <= *dp - *ds as u8,
        (g, Decimal128(..)) if int_width(g).is_some() => true,
        (Struct(g), Struct(d)) => {
            g.len() == d.len()
                && g.iter()
                    .zip(d.iter())
                    .all(|(g, d)| fits(g.data_type(), d.data_type()))
        }
        _ => false,
    }
}

/// A type as SQL writes it, for errors.
fn sql_type(t: &DataType) -> String {
    use DataType::*;
    match t {
        Int8 => "TINYINT".into(),
        Int16 => "SMALLINT".into(),
        Int32 => "INT".into(),
        Int64 => "BIGINT".into(),
        UInt32 => "INT UNSIGNED".into(),
        UInt64 => "BIGINT UNSIGNED".into(),
        Float32 => "REAL".into(),
        Float64 => "DOUBLE".into(),
        Utf8 | LargeUtf8 | Utf8View => "VARCHAR".into(),
        Boolean => "BOOLEAN".into(),
        Date32 | Date64 => "DATE".into(),
        Timestamp(..) => "TIMESTAMP".into(),
        Decimal128(p, s) => format!("DECIMAL({p}, {s})"),
        other => other.to_string(),
    }
}

/// The columns a job writes, as `name: type`, for its checkpoint.
pub fn describe_columns(schema: &Schema) -> Vec<String> {
    schema
        .fields()
        .iter()
        .map(|f| format!("{}: {}", f.name(), f.data_type()))
        .collect()
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::TimeUnit;

    use super::*;

    #[test]
    fn only_lossless_writes_fit() {
        assert!(fits(&DataType::Int32, &DataType::Int64));
        assert!(fits(&DataType::Int64, &DataType::Float64));
        assert!(fits(&DataType::Utf8View, &DataType::Utf8));
        assert!(fits(
            &DataType::Timestamp(TimeUnit::Millisecond, None),
            &DataType::Timestamp(TimeUnit::Nanosecond, None)
        ));
        assert!(!fits(&DataType::Float64, &DataType::Int64));
        assert!(!fits(&DataType::Utf8, &DataType::Int64));
        assert!(!fits(&DataType::Int64, &DataType::Int32));
    }
}
