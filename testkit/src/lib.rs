//! Real Redis, PostgreSQL and S3-protocol servers for Spate's tests and
//! benchmarks, from Debian's packages and PyPI (`./test.sh` installs them), on free
//! loopback ports, stopped when dropped; and TLS certificates for tests of
//! a master that serves TLS.

mod tls;

pub use tls::TestCertificates;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// Whether this machine has the servers' programs (benchmarks skip a
/// store that is missing; tests insist).
pub fn available() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok()
        && std::path::Path::new("/usr/lib/postgresql").is_dir()
}
use std::time::{Duration, Instant};

/// A free loopback port (a race with other programs is possible, and rare).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub struct RedisServer {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server is needed for this test: apt-get install redis-server (./test.sh installs it)");
        let server = RedisServer {
            child,
            port,
            _dir: dir,
        };
        wait_for("redis-server", || {
            redis::Client::open(server.url())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        });
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct PostgresServer {
    data: PathBuf,
    pub port: u16,
    _dir: tempfile::TempDir,
}

/// Where Debian keeps PostgreSQL's server programs.
fn postgres_bin(program: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is needed for this test: apt-get install postgresql (./test.sh installs it)")
        .map(|e| e.unwrap().path().join("bin").join(program))
        .filter(|p| p.exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .unwrap_or_else(|| panic!("no PostgreSQL {program} under /usr/lib/postgresql"))
}

/// PostgreSQL refuses to run as root: as root, its programs run as the
/// `postgres` user that Debian's package creates.
fn as_postgres(program: &str) -> Command {
    let path = postgres_bin(program);
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(path);
        command
    } else {
        Command::new(path)
    }
}

impl PostgresServer {
    pub fn start() -> PostgresServer {
        let dir = tempfile::tempdir().unwrap();
        // The postgres user creates its data folder inside this one.
        std::process::Command::new("chmod")
            .args(["0777"])
            .arg(dir.path())
            .status()
            .unwrap();
        let data = dir.path().join("data");
        let initialized = as_postgres("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "spate", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(
            initialized.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&initialized.stderr)
        );
        let port = free_port();
        let options = format!(
            "-k {} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off",
            dir.path().display()
        );
        let started = as_postgres("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-o", &options, "-w", "-l"])
            .arg(dir.path().join("postgres.log"))
            .arg("start")
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(
            started.status.success(),
            "pg_ctl start failed: {}",
            String::from_utf8_lossy(&started.stderr)
        );
        PostgresServer {
            data,
            port,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("postgresql://spate@127.0.0.1:{}/postgres", self.port)
    }

    /// Rows of `query` as text, one line each, columns separated by `|`.
    pub async fn query(&self, query: &str) -> Vec<String> {
        let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .simple_query(query)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                    (0..row.len())
                        .map(|i| row.get(i).unwrap_or("NULL").to_string())
                        .collect::<Vec<_>>()
                        .join("|"),
                ),
                _ => None,
            })
            .collect()
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let _ = as_postgres("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// An S3-protocol server (moto's, from PyPI: `./test.sh` installs it) on a
/// free loopback port, with one empty bucket. It lives while its stdin is
/// open, so it ends with the test even when the test is killed.
pub struct S3Server {
    child: Child,
    pub port: u16,
    pub bucket: String,
}

/// Starts the server, makes the bucket, and says so on stdout.
const MOTO: &str = r#"
import logging, sys, boto3
from moto.server import ThreadedMotoServer
logging.getLogger("werkzeug").setLevel(logging.ERROR)
port, bucket = int(sys.argv[1]), sys.argv[2]
server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
server.start()
boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
             aws_access_key_id="spate", aws_secret_access_key="spate").create_bucket(Bucket=bucket)
print("ready", flush=True)
sys.stdin.read()
server.stop()
"#;

impl S3Server {
    pub fn start() -> S3Server {
        use std::io::BufRead;
        let port = free_port();
        let bucket = "spate".to_string();
        let mut child = Command::new("python3")
            .args(["-c", MOTO, &port.to_string(), &bucket])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 is needed for the S3 server: ./test.sh installs it");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "moto's S3 server did not start: pip install 'moto[server]' (./test.sh installs it)"
        );
        S3Server {
            child,
            port,
            bucket,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The standard AWS variables that point a process at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ACCESS_KEY_ID", "spate".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "spate".to_string()),
        ]
    }

    /// A client of this server, through the S3 API, configured as `env` says.
    pub fn client(&self) -> object_store::aws::AmazonS3Builder {
        self.env().into_iter().fold(
            object_store::aws::AmazonS3Builder::new(),
            |builder, (key, value)| builder.with_config(key.to_lowercase().parse().unwrap(), value),
        )
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
