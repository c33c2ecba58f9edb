//! B6: Spark beside Spate on B2's tumbling-window query. PySpark local[2]
//! (`bench/spark/windowed.py`) reads the same events as JSON files with
//! Spark's file source, available-now, into Parquet; Spate reads them from
//! Kafka on two workers. Runs interleaved; best of each. Skipped, saying
//! how to install it, where `pyspark` is not importable.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::throughput::{Workload, spate_job};
use crate::{Error, Figure, ThroughputArgs, broker_with_events, event, event_at};

const FILES: u64 = 8;

pub async fn run(args: ThroughputArgs) -> Result<Figure, Error> {
    let name = format!(
        "B6 vs Spark local[2]: B2's tumbling window ({} events)",
        args.events + 1
    );
    let has_spark = Command::new("python3")
        .args(["-c", "import pyspark"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_spark {
        return Ok(Figure {
            bench: name,
            spate: "skipped: python3 -m pip install pyspark (Java 17 needed)".to_string(),
            baseline: String::new(),
            ratio: String::new(),
            target: ">= 5x Spark's events/s".to_string(),
            met: None,
        });
    }
    let input = tempfile::tempdir()?;
    write_json(input.path(), args.events)?;
    let broker = broker_with_events(args.events, args.partitions).await?;
    let mut best = (Duration::MAX, Duration::MAX);
    for run in 1..=args.runs {
        let (spate, _) = spate_job(broker.bootstrap_servers(), Workload::Tumbling, args).await?;
        let (spark, rows) = spark_run(input.path())?;
        eprintln!(
            "run {run}: B6: spate {:.2}s, spark {:.2}s ({rows} rows)",
            spate.as_secs_f64(),
            spark.as_secs_f64()
        );
        best = (best.0.min(spate), best.1.min(spark));
    }
    let events = (args.events + 1) as f64;
    let (spate_rate, spark_rate) = (events / best.0.as_secs_f64(), events / best.1.as_secs_f64());
    let ratio = spate_rate / spark_rate;
    Ok(Figure {
        bench: name,
        spate: format!(
            "{spate_rate:.0} events/s ({} workers x {} slot)",
            args.workers, args.slots
        ),
        baseline: format!("{spark_rate:.0} events/s (Spark, JSON files)"),
        ratio: format!("{ratio:.1}x"),
        target: ">= 5x".to_string(),
        met: Some(ratio >= 5.0),
    })
}

/// The benchmark's events, and the closing one, as JSON lines in files.
fn write_json(dir: &Path, events: u64) -> Result<(), Error> {
    let mut files = (0..FILES)
        .map(|f| {
            std::fs::File::create(dir.join(format!("part-{f}.json"))).map(std::io::BufWriter::new)
        })
        .collect::<Result<Vec<_>, _>>()?;
    for i in 0..events {
        writeln!(files[(i % FILES) as usize], "{}", event(i))?;
    }
    writeln!(files[0], "{}", event_at(events, 3_600_000))?;
    for mut file in files {
        file.flush()?;
    }
    Ok(())
}

fn spark_run(input: &Path) -> Result<(Duration, u64), Error> {
    let work = tempfile::tempdir()?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/spark/windowed.py");
    let ran = Command::new("python3")
        .arg(script)
        .arg(input)
        .arg(work.path())
        .output()?;
    if !ran.status.success() {
        return Err(format!(
            "the Spark run failed: {}",
            String::from_utf8_lossy(&ran.stderr)
        )
        .into());
    }
    let stdout = String::from_utf8_lossy(&ran.stdout);
    let last = stdout
        .lines()
        .last()
        .ok_or("the Spark run printed nothing")?;
    let result: serde_json::Value = serde_json::from_str(last)?;
    let seconds = result["seconds"].as_f64().ok_or("no seconds from Spark")?;
    Ok((
        Duration::from_secs_f64(seconds),
        result["rows"].as_u64().unwrap_or(0),
    ))
}
