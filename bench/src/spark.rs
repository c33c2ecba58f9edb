//! B6: Spark beside Spate on B2's tumbling-window query. PySpark local[2]
//! (`bench/spark/windowed.py`) reads the same events as JSON files with
//! Spark's file source, available-now, into Parquet; Spate's figure is its
//! B2 runs over the same events from Kafka on two workers. Medians of each.
//! Skipped, saying how to install it, where `pyspark` is not importable.

use std::path::Path;
use std::time::Duration;

use crate::throughput::Measured;
use crate::{Error, Figure, ThroughputArgs, median, python};

/// Spark runs B2's tumbling window over the JSON files `args.runs` times;
/// its median beside the median of Spate's runs on the same events.
pub fn run(files: &Path, tumbling: &Measured, args: &ThroughputArgs) -> Result<Figure, Error> {
    let name = format!(
        "B6 vs Spark local[2]: B2's tumbling window ({} events)",
        args.events + 1
    );
    if !python::imports("pyspark") {
        return Ok(Figure {
            bench: name,
            spate: "skipped: python3 -m pip install pyspark (Java 17 needed)".to_string(),
            baseline: String::new(),
            ratio: String::new(),
            target: ">= 5x Spark's events/s".to_string(),
            met: None,
        });
    }
    let mut runs = Vec::new();
    for run in 1..=args.runs {
        let (spark, rows) = spark_run(files)?;
        eprintln!(
            "run {run}: B6: spark {:.2}s ({rows} rows)",
            spark.as_secs_f64()
        );
        runs.push(spark);
    }
    let spate_rate = tumbling.spate_rate(args);
    let spark_rate = (args.events + 1) as f64 / median(runs).as_secs_f64();
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

fn spark_run(input: &Path) -> Result<(Duration, u64), Error> {
    let work = tempfile::tempdir()?;
    let stdout = python::run_script(
        "Spark",
        "spark/windowed.py",
        &[input.as_os_str(), work.path().as_os_str()],
    )?;
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
