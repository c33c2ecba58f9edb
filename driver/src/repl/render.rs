//! How a result looks: a table that reads well in a terminal (wide values
//! cut, long results cut with a count), CSV or JSON lines; and the HTML
//! table a notebook shows.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

/// How results print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

impl OutputFormat {
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_lowercase().as_str() {
            "table" => Some(OutputFormat::Table),
            "csv" => Some(OutputFormat::Csv),
            "json" => Some(OutputFormat::Json),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Table => "table",
            OutputFormat::Csv => "csv",
            OutputFormat::Json => "json",
        }
    }
}

/// Display limits of the table format.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Rows shown; the rest are counted.
    pub max_rows: usize,
    /// Characters shown of one value.
    pub max_width: usize,
}

/// A result as text in the given format.
pub fn render(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    format: OutputFormat,
    limits: Limits,
) -> Result<String, ArrowError> {
    match format {
        OutputFormat::Table => table(schema, batches, limits),
        OutputFormat::Csv => {
            let mut out = Vec::new();
            let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            for batch in batches {
                writer.write(batch)?;
            }
            drop(writer);
            Ok(String::from_utf8_lossy(&out).trim_end().to_string())
        }
        OutputFormat::Json => {
            let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(Vec::new());
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
            Ok(String::from_utf8_lossy(&writer.into_inner())
                .trim_end()
                .to_string())
        }
    }
}

/// The result's first rows as cells of text, and how many rows there are.
fn cells(batches: &[RecordBatch], limits: Limits) -> Result<(Vec<Vec<String>>, usize), ArrowError> {
    let options = FormatOptions::default().with_null("NULL");
    let total = batches.iter().map(RecordBatch::num_rows).sum();
    let mut rows = Vec::new();
    for batch in batches {
        if rows.len() >= limits.max_rows {
            break;
        }
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows().min(limits.max_rows - rows.len()) {
            rows.push(
                formatters
                    .iter()
                    .map(|f| cut(&f.value(row).to_string(), limits.max_width))
                    .collect(),
            );
        }
    }
    Ok((rows, total))
}

fn cut(value: &str, width: usize) -> String {
    if value.chars().count() <= width {
        return value.to_string();
    }
    let mut short: String = value.chars().take(width.saturating_sub(1)).collect();
    short.push('…');
    short
}

fn table(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    limits: Limits,
) -> Result<String, ArrowError> {
    let (rows, total) = cells(batches, limits)?;
    let mut table = crate::table(
        &schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>(),
    );
    // Values are already cut to max_width; wrapping them to the terminal
    // as well would split numbers over lines.
    table.set_content_arrangement(comfy_table::ContentArrangement::Disabled);
    for row in rows {
        table.add_row(row);
    }
    let mut text = table.to_string();
    if total > limits.max_rows {
        text.push_str(&format!(
            "\n… {} more rows (\\set max_rows N shows more)",
            total - limits.max_rows
        ));
    }
    Ok(text)
}

/// An HTML table of the result's first rows, as notebooks show results.
pub fn html(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    limits: Limits,
) -> Result<String, ArrowError> {
    let (rows, total) = cells(batches, limits)?;
    let mut html = String::from("<table>\n<thead><tr>");
    for field in schema.fields() {
        html.push_str(&format!("<th>{}</th>", escape(field.name())));
    }
    html.push_str("</tr></thead>\n<tbody>\n");
    for row in rows {
        html.push_str("<tr>");
        for value in row {
            html.push_str(&format!("<td>{}</td>", escape(&value)));
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</tbody>\n</table>\n");
    if total > limits.max_rows {
        html.push_str(&format!("<p>… {} more rows</p>\n", total - limits.max_rows));
    }
    Ok(html)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn result() -> (SchemaRef, Vec<RecordBatch>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(vec![
                    Some("a<b"),
                    None,
                    Some("a rather long value"),
                ])),
                Arc::new(Int64Array::from(vec![1, 2, 3])),
            ],
        )
        .unwrap();
        (schema, vec![batch])
    }

    #[test]
    fn tables_cut_wide_values_and_long_results() {
        let (schema, batches) = result();
        let limits = Limits {
            max_rows: 2,
            max_width: 5,
        };
        let text = render(&schema, &batches, OutputFormat::Table, limits).unwrap();
        assert!(text.contains("NULL"), "{text}");
        assert!(!text.contains("a rath"), "{text}");
        assert!(text.contains("… 1 more rows"), "{text}");
        let html = html(&schema, &batches, limits).unwrap();
        assert!(html.contains("<td>a&lt;b</td>"), "{html}");
    }

    #[test]
    fn csv_and_json_hold_every_row() {
        let (schema, batches) = result();
        let limits = Limits {
            max_rows: 1,
            max_width: 5,
        };
        let csv = render(&schema, &batches, OutputFormat::Csv, limits).unwrap();
        assert_eq!(csv.lines().count(), 4, "{csv}");
        let json = render(&schema, &batches, OutputFormat::Json, limits).unwrap();
        assert!(
            json.contains(r#"{"name":"a rather long value","n":3}"#),
            "{json}"
        );
    }
}
