//! B1/B2/B6/B7's input: the benchmark's events in a development broker that
//! runs in its own process, so the CPU Spate's threads spend can be told
//! from the broker's, and the same events as JSON-lines files for Spark and
//! Flink.
//!
//! The development broker (librdkafka's mock cluster) keeps at most 5 MiB
//! per partition, a limit compiled into librdkafka. The events are
//! produced LZ4-compressed, as Kafka producers commonly do, so four million
//! of them fit in 32 partitions; every reader pays for the decompression
//! alike. The broker process checks that no record was dropped before it
//! says it is ready.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use spate_engine::kafka::DevBroker;

use crate::{CUSTOMERS, Error, T0_MS};

/// Event `i`: ten per second of event time, in order, `ahead_ms` later.
pub fn event_at(i: u64, ahead_ms: i64) -> String {
    let ts = chrono::DateTime::from_timestamp_millis(T0_MS + i as i64 * 100 + ahead_ms)
        .unwrap_or_default();
    format!(
        r#"{{"ts":"{}","customer":"c{}","amount":{}}}"#,
        ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        (i * 7919) % CUSTOMERS,
        (i % 400) as f64 * 0.25
    )
}

pub fn event(i: u64) -> String {
    event_at(i, 0)
}

/// The event after the last: an hour ahead, its watermark closes every
/// other window, so Spate emits them all; its own windows stay open.
fn closing_event(events: u64) -> String {
    event_at(events, 3_600_000)
}

/// The events, and the closing one, as JSON lines in `files` files.
pub fn write_json(dir: &Path, events: u64, files: u64) -> Result<(), Error> {
    let mut writers = (0..files)
        .map(|f| {
            std::fs::File::create(dir.join(format!("part-{f}.json"))).map(std::io::BufWriter::new)
        })
        .collect::<Result<Vec<_>, _>>()?;
    for i in 0..events {
        writeln!(writers[(i % files) as usize], "{}", event(i))?;
    }
    writeln!(writers[0], "{}", closing_event(events))?;
    for mut writer in writers {
        writer.flush()?;
    }
    Ok(())
}

/// The development broker in a child process (this binary's hidden
/// `serve-broker`), holding the events in topic `events`. It stops when
/// this handle is dropped, or when this process dies (its stdin closes).
pub struct BrokerProcess {
    child: Child,
    bootstrap: String,
    _stdout: BufReader<ChildStdout>,
}

impl BrokerProcess {
    pub fn start(events: u64, partitions: i32) -> Result<Self, Error> {
        let mut child = Command::new(std::env::current_exe()?)
            .args([
                "serve-broker",
                "--events",
                &events.to_string(),
                "--partitions",
                &partitions.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or("the broker has no stdout")?);
        let mut bootstrap = String::new();
        stdout.read_line(&mut bootstrap)?;
        let bootstrap = bootstrap.trim().to_string();
        if bootstrap.is_empty() {
            let status = child.wait()?;
            return Err(format!("the broker process ended before it was ready ({status})").into());
        }
        Ok(BrokerProcess {
            child,
            bootstrap,
            _stdout: stdout,
        })
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// CPU time the broker process has used so far.
    pub fn cpu(&self) -> Duration {
        process_cpu_of(self.child.id()).unwrap_or_default()
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        // Closing its stdin tells the broker to stop.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// `serve-broker`: starts the development broker, fills it, prints its
/// address on stdout and serves until stdin closes.
pub fn serve_broker(events: u64, partitions: i32) -> Result<(), Error> {
    let broker = DevBroker::start()?;
    broker.create_topic("events", partitions)?;
    let started = Instant::now();
    produce(broker.bootstrap_servers(), events, partitions)?;
    eprintln!(
        "produced {events} events to {partitions} partitions in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    println!("{}", broker.bootstrap_servers());
    std::io::stdout().flush()?;
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    Ok(())
}

fn produce(bootstrap: &str, events: u64, partitions: i32) -> Result<(), Error> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("compression.type", "lz4")
        .set("linger.ms", "50")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let lines = (0..events)
        .map(|i| (event(i), (i % partitions as u64) as i32))
        .chain(std::iter::once((closing_event(events), 0)));
    for (line, partition) in lines {
        let mut record = BaseRecord::<(), [u8]>::to("events")
            .payload(line.as_bytes())
            .partition(partition);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    // Retention is by size: a partition that overflowed dropped its oldest records.
    for partition in 0..partitions {
        let (low, _) =
            producer
                .client()
                .fetch_watermarks("events", partition, Duration::from_secs(10))?;
        if low > 0 {
            return Err(format!(
                "the development broker dropped the first {low} records of partition {partition}: it keeps about 5 MiB per partition; run with more --partitions"
            )
            .into());
        }
    }
    Ok(())
}

/// CPU time (user and system) a process has used, from `/proc/PID/stat`.
pub fn process_cpu_of(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are plain.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / per_second))
}

/// CPU time (user and system) every thread of this process has used,
/// including threads that have ended.
pub fn own_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}
