//! A cluster of real processes behind TLS and a secret, as a team deploys
//! it: the driver, a worker and the REPL work over https:// with the CA,
//! and a job whose OPTIONS hold a Kafka password never shows it: not on a
//! page, in the API, the CLI's output, a notebook, a progress record or a
//! log line of the master or the worker.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use spate_proto::ListJobsRequest;
use spate_testkit::TestCertificates;

const SECRET: &str = "team-secret-7f3a";
const PASSWORD: &str = "hunter2";

fn job_sql(bootstrap: &str) -> String {
    format!(
        "CREATE EXTERNAL TABLE sales (id BIGINT, customer VARCHAR, revenue DOUBLE)
           STORED AS KAFKA LOCATION 'sales'
           OPTIONS ('bootstrap.servers' '{bootstrap}', 'kafka.sasl.password' '{PASSWORD}');
         CREATE EXTERNAL TABLE revenue STORED AS PARQUET LOCATION 'output/revenue/';
         SET spate.trigger.interval = '200ms';
         INSERT INTO revenue SELECT id, customer, revenue FROM sales WHERE revenue > 100;"
    )
}

/// `driver ARGS` against the TLS master; its output, which must succeed.
fn driver(url: &str, certs: &TestCertificates, args: &[&str]) -> Output {
    let output = Command::new(bin("driver"))
        .args(args)
        .args(["--master", url])
        .arg("--tls-ca")
        .arg(&certs.ca)
        .env("SPATE_SECRET", SECRET)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "driver {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Every file under `dir`, with its text.
fn files(dir: &Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                found.push((
                    path.display().to_string(),
                    String::from_utf8_lossy(&bytes).into_owned(),
                ));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_with_a_secret_nothing_shows_a_jobs_password() {
    let ws = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let certs = TestCertificates::generate();
    let (_kafka, bootstrap) = sales_kafka();
    produce_sales(&bootstrap, "sales", 0..400, 4).await;

    let cert = certs.cert.display().to_string();
    let key = certs.key.display().to_string();
    let master = start_master_logged(
        ws.path(),
        "127.0.0.1:0",
        &["--secret", SECRET, "--tls-cert", &cert, "--tls-key", &key],
        Some(&logs.path().join("master.log")),
    );
    assert_eq!(master.scheme, "https");
    // The certificate names 127.0.0.1, as the URL must.
    let url = master.url();
    let ca = certs.ca.display().to_string();
    let _worker = start_worker_logged(
        &url,
        ws.path(),
        "w1",
        &["--tls-ca", &ca, "--secret", SECRET],
        Some(&logs.path().join("worker.log")),
    );
    let job_file = ws.path().join("revenue.sql");
    std::fs::write(&job_file, job_sql(&bootstrap)).unwrap();

    // The driver: submit, jobs, workers, over TLS.
    let mut shown = Vec::new();
    let submitted = driver(&url, &certs, &["submit", &job_file.display().to_string()]);
    assert!(
        text(&submitted).contains("submitted job revenue"),
        "{}",
        text(&submitted)
    );
    shown.push(("driver submit".to_string(), text(&submitted)));
    let mut client = spate_proto::dial::client(&url, Some(&certs.ca), SECRET)
        .await
        .unwrap();
    wait_until(
        "the job reads every record",
        Duration::from_secs(120),
        || {
            let mut client = client.clone();
            async move {
                let jobs = client.list_jobs(ListJobsRequest {}).await.unwrap();
                jobs.into_inner().jobs.iter().any(|j| j.input_rows >= 400)
            }
        },
    )
    .await;
    let listed = client.list_jobs(ListJobsRequest {}).await.unwrap();
    shown.push(("ListJobs".into(), format!("{:?}", listed.into_inner())));
    for args in [&["jobs"][..], &["workers"]] {
        let output = driver(&url, &certs, args);
        shown.push((format!("driver {args:?}"), text(&output)));
    }
    assert!(
        shown.last().unwrap().1.contains("w1"),
        "the TLS worker is listed"
    );

    // The REPL over TLS: its \jobs, a table with the password, \save.
    let script = ws.path().join("session.sql");
    std::fs::write(
        &script,
        format!(
            "\\jobs\n\
             CREATE EXTERNAL TABLE again (id BIGINT) STORED AS KAFKA LOCATION 'sales' \
             OPTIONS ('bootstrap.servers' '{bootstrap}', 'kafka.sasl.password' '{PASSWORD}');\n\
             SELECT 40 + 2 AS answer;\n\
             \\save secure.ipynb\n"
        ),
    )
    .unwrap();
    let ws_arg = ws.path().display().to_string();
    let script_arg = script.display().to_string();
    let repl = driver(
        &url,
        &certs,
        &["repl", "--workspace", &ws_arg, "-f", &script_arg],
    );
    let repl_text = text(&repl);
    assert!(
        repl_text.contains("42"),
        "the REPL ran over TLS: {repl_text}"
    );
    assert!(
        repl_text.contains("revenue"),
        "\\jobs lists the job: {repl_text}"
    );
    shown.push(("driver repl".into(), repl_text));

    // Every page and API route, with the secret.
    let trusted = reqwest::Certificate::from_pem(&std::fs::read(&certs.ca).unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(trusted)
        .build()
        .unwrap();
    for page in [
        "/",
        "/jobs/revenue",
        "/workers/w1",
        "/api/v1/jobs",
        "/api/v1/jobs/revenue",
        "/api/v1/jobs/revenue/batches",
        "/api/v1/jobs/revenue/progress",
        "/api/v1/progress",
        "/api/v1/workers",
        "/api/v1/workers/w1",
        "/metrics",
    ] {
        let response = http
            .get(format!("{}{page}", master.http))
            .header("X-Spate-Secret", SECRET)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GET {page}");
        shown.push((format!("GET {page}"), response.text().await.unwrap()));
    }
    let job_page = &shown
        .iter()
        .find(|(what, _)| what == "GET /jobs/revenue")
        .unwrap()
        .1;
    assert!(
        job_page.contains("&apos;kafka.sasl.password&apos; &apos;*****&apos;")
            || job_page.contains("'kafka.sasl.password' '*****'"),
        "the job page shows the SQL, redacted: {job_page}"
    );

    // Stop the job (it commits its batch), then read every log line and
    // every file the cluster wrote but the job's own definition, which the
    // master needs to resume the job with its credentials.
    driver(&url, &certs, &["stop", "revenue"]);
    wait_until("the job to stop", Duration::from_secs(60), || {
        let mut client = client.clone();
        async move {
            let jobs = client.list_jobs(ListJobsRequest {}).await.unwrap();
            let jobs = jobs.into_inner().jobs;
            jobs.iter()
                .all(|j| j.state() == spate_proto::JobState::Stopped)
        }
    })
    .await;
    drop(master);
    for (path, content) in files(logs.path()).into_iter().chain(files(ws.path())) {
        if path.ends_with("revenue.sql")
            || path.ends_with("session.sql")
            || path.ends_with("job.json")
        {
            continue;
        }
        shown.push((path, content));
    }
    let logged = shown
        .iter()
        .filter(|(what, _)| what.ends_with(".log"))
        .map(|(_, text)| text.lines().count())
        .sum::<usize>();
    assert!(logged > 5, "the logs were read: {logged} lines");
    assert!(
        shown.iter().any(|(what, _)| what.ends_with("secure.ipynb")),
        "the notebook was saved"
    );
    for (what, content) in &shown {
        assert!(
            !content.contains(PASSWORD),
            "{what} shows the password:\n{content}"
        );
        assert!(
            !content.contains(SECRET),
            "{what} shows the cluster secret:\n{content}"
        );
    }
}
