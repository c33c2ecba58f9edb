//! B7: Apache Flink beside Spate on B1's and B2's queries. PyFlink
//! (`bench/flink/queries.py`, the PyPI package `apache-flink`) runs each
//! query in streaming mode on a local MiniCluster with parallelism equal to
//! Spate's slots, reading the same events as JSON files into a blackhole;
//! Spate's figure is its B1/B2 runs over the same events from Kafka. Flink
//! is given its net runtime (the job's execution, not the client's
//! pre-flight nor the MiniCluster's start), the best case for the baseline;
//! the wall time with job start is printed beside it. Medians of each.
//! Skipped, saying how to install it, where `pyflink` is not importable.

use std::path::Path;
use std::time::Duration;

use crate::throughput::Measured;
use crate::{Error, Figure, ThroughputArgs, median, python};

const TARGET: f64 = 5.0;

pub fn run(
    files: &Path,
    measured: &[Measured],
    args: &ThroughputArgs,
) -> Result<Vec<Figure>, Error> {
    let parallelism = args.workers * args.slots;
    let name = |m: &Measured, version: &str| {
        format!(
            "B7 vs Flink {version} (local, parallelism {parallelism}): {} ({} events)",
            m.workload.name(),
            args.events + 1
        )
    };
    if !python::imports("pyflink") {
        return Ok(measured
            .iter()
            .map(|m| Figure {
                bench: name(m, ""),
                spate: "skipped: python3 -m pip install apache-flink (Java 17 needed)".to_string(),
                baseline: String::new(),
                ratio: String::new(),
                target: format!(">= {TARGET}x Flink's events/s"),
                met: None,
            })
            .collect());
    }
    let runs = flink_runs(files, parallelism, args.runs)?;
    if runs.rows != args.events + 1 {
        return Err(format!(
            "Flink read {} events with a time of the {} in the files",
            runs.rows,
            args.events + 1
        )
        .into());
    }
    let events = (args.events + 1) as f64;
    measured
        .iter()
        .map(|m| {
            let of_query = |seconds: fn(&FlinkRun) -> Duration| {
                median(
                    runs.runs
                        .iter()
                        .filter(|r| r.query == m.workload.key())
                        .map(seconds)
                        .collect(),
                )
            };
            let (net, wall) = (of_query(|r| r.net), of_query(|r| r.wall));
            if net.is_zero() {
                return Err(format!("Flink reported no run of {}", m.workload.key()).into());
            }
            let spate_rate = m.spate_rate(args);
            let flink_rate = events / net.as_secs_f64();
            let ratio = spate_rate / flink_rate;
            Ok(Figure {
                bench: name(m, &runs.version),
                spate: format!(
                    "{spate_rate:.0} events/s ({} workers x {} slot, from Kafka)",
                    args.workers, args.slots
                ),
                baseline: format!(
                    "{flink_rate:.0} events/s (Flink's net runtime; {:.0} with job start)",
                    events / wall.as_secs_f64()
                ),
                ratio: format!("{ratio:.1}x"),
                target: format!(">= {TARGET}x"),
                met: Some(ratio >= TARGET),
            })
        })
        .collect()
}

struct FlinkRun {
    query: String,
    wall: Duration,
    net: Duration,
}

struct FlinkRuns {
    version: String,
    /// Events Flink read with their time.
    rows: u64,
    runs: Vec<FlinkRun>,
}

/// Runs the script: every query `runs` times, interleaved, in one JVM.
fn flink_runs(input: &Path, parallelism: u32, runs: u32) -> Result<FlinkRuns, Error> {
    let (parallelism, runs) = (parallelism.to_string(), runs.to_string());
    let stdout = python::run_script(
        "Flink",
        "flink/queries.py",
        &[input.as_os_str(), parallelism.as_ref(), runs.as_ref()],
    )?;
    let mut parsed = FlinkRuns {
        version: String::new(),
        rows: 0,
        runs: Vec::new(),
    };
    for line in stdout.lines().filter(|l| l.starts_with('{')) {
        let value: serde_json::Value = serde_json::from_str(line)?;
        if let Some(version) = value["version"].as_str() {
            parsed.version = version.to_string();
            continue;
        }
        if let Some(rows) = value["rows_with_time"].as_u64() {
            parsed.rows = rows;
            continue;
        }
        let seconds = |key: &str| value[key].as_f64().map(Duration::from_secs_f64);
        let (Some(query), Some(wall), Some(net)) = (
            value["query"].as_str(),
            seconds("seconds"),
            seconds("net_seconds"),
        ) else {
            return Err(format!("the Flink script printed a line it should not: {line}").into());
        };
        eprintln!(
            "run {}: B7: flink {query} {:.2}s ({:.2}s net)",
            value["run"],
            wall.as_secs_f64(),
            net.as_secs_f64()
        );
        parsed.runs.push(FlinkRun {
            query: query.to_string(),
            wall,
            net,
        });
    }
    Ok(parsed)
}
