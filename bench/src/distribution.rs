//! B5, distribution overhead: an aggregation over Parquet files in the
//! workspace, asked through the REPL's path (a RunStatement call: planned
//! by the master, run as stages on the workers, rows streamed back as
//! Arrow) vs DataFusion alone in one process over the same files, runs
//! interleaved. Both answers must hold the same rows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Float64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use spate_proto::{RunStatementRequest, statement_reply};

use crate::{BenchCluster, CUSTOMERS, DistributionArgs, Error, Figure, T0_MS};

const FILES: u64 = 8;
/// Revenue per customer per minute: a few hundred thousand groups, so the
/// aggregation is real work on both sides.
const QUERY: &str = "SELECT customer, date_trunc('minute', ts) AS minute, count(*) AS n, sum(amount) AS revenue, avg(amount) AS mean FROM sales GROUP BY customer, date_trunc('minute', ts) ORDER BY revenue DESC, customer, minute LIMIT 100";

pub async fn run(args: DistributionArgs, runs: u32) -> Result<Figure, Error> {
    let cluster = BenchCluster::start("localhost:9092", 2, 1).await?;
    let dir = cluster.workspace.path().join("data/b5");
    write_files(&dir, args.rows)?;
    let mut best = (Duration::MAX, Duration::MAX);
    for run in 1..=runs {
        let (spate, spate_rows) = through_cluster(&cluster).await?;
        let (alone, alone_rows) = datafusion_alone(&dir).await?;
        eprintln!(
            "run {run}: B5: cluster {:.3}s, DataFusion alone {:.3}s",
            spate.as_secs_f64(),
            alone.as_secs_f64()
        );
        if spate_rows != alone_rows {
            return Err(
                format!("B5: the answers differ: {spate_rows} rows vs {alone_rows}").into(),
            );
        }
        best = (best.0.min(spate), best.1.min(alone));
    }
    cluster.shutdown().await;
    let ratio = best.0.as_secs_f64() / best.1.as_secs_f64();
    Ok(Figure {
        bench: format!(
            "B5 aggregation over Parquet ({} rows, {FILES} files): REPL path on 2 workers vs DataFusion alone",
            args.rows
        ),
        spate: format!("{:.0} ms", best.0.as_secs_f64() * 1000.0),
        baseline: format!("{:.0} ms", best.1.as_secs_f64() * 1000.0),
        ratio: format!("{ratio:.2}x the time"),
        target: "<= 1.15x".to_string(),
        met: Some(ratio <= 1.15),
    })
}

fn write_files(dir: &std::path::Path, rows: u64) -> Result<(), Error> {
    std::fs::create_dir_all(dir)?;
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
        Field::new("customer", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, false),
    ]));
    let per_file = rows / FILES;
    for f in 0..FILES {
        let file = std::fs::File::create(dir.join(format!("part-{f}.parquet")))?;
        let mut writer =
            datafusion::parquet::arrow::ArrowWriter::try_new(file, Arc::clone(&schema), None)?;
        let mut start = f * per_file;
        let end = start + per_file;
        while start < end {
            let n = (end - start).min(65_536);
            let ids = start..start + n;
            let batch = RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(TimestampMillisecondArray::from_iter_values(
                        ids.clone().map(|i| T0_MS + i as i64 * 100),
                    )),
                    Arc::new(StringArray::from_iter_values(
                        ids.clone().map(|i| format!("c{}", (i * 7919) % CUSTOMERS)),
                    )),
                    Arc::new(Float64Array::from_iter_values(
                        ids.map(|i| (i % 400) as f64 * 0.25),
                    )),
                ],
            )?;
            writer.write(&batch)?;
            start += n;
        }
        writer.close()?;
    }
    Ok(())
}

async fn through_cluster(cluster: &BenchCluster) -> Result<(Duration, usize), Error> {
    let started = Instant::now();
    let mut replies = cluster
        .client
        .clone()
        .run_statement(RunStatementRequest {
            session: vec![
                "CREATE EXTERNAL TABLE sales STORED AS PARQUET LOCATION 'data/b5/'".into(),
            ],
            statement: QUERY.into(),
            explain: false,
        })
        .await?
        .into_inner();
    let mut rows = 0;
    while let Some(reply) = replies.message().await? {
        if let Some(statement_reply::Kind::End(end)) = reply.kind {
            rows = end.rows as usize;
        }
    }
    Ok((started.elapsed(), rows))
}

async fn datafusion_alone(dir: &std::path::Path) -> Result<(Duration, usize), Error> {
    let started = Instant::now();
    let ctx = SessionContext::new();
    ctx.register_parquet(
        "sales",
        dir.to_string_lossy().as_ref(),
        ParquetReadOptions::default(),
    )
    .await?;
    let rows = ctx.sql(QUERY).await?.collect().await?;
    Ok((
        started.elapsed(),
        rows.iter().map(RecordBatch::num_rows).sum(),
    ))
}
