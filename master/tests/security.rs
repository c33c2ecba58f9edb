//! The master as an outsider meets it: with a secret set, every gRPC
//! method and every page refuses a caller without it and answers one with
//! it; over TLS, clients that trust the master's CA get in and others are
//! refused; oversized requests get a clear error and the cluster goes on.

mod common;

use std::time::Duration;

use common::*;
use spate_engine::kafka::DevBroker;
use spate_master::{MasterHandle, TlsFiles};
use spate_proto::dial::{self, Client, DialError};
use spate_proto::{
    ListJobsRequest, ListWorkersRequest, RunStatementRequest, StopJobRequest, SubmitJobRequest,
    TailJobRequest, statement_reply,
};
use spate_testkit::TestCertificates;
use tokio::sync::watch;
use tonic::{Code, Status};

const SECRET: &str = "s3cret-of-the-cluster";

fn job_sql(bootstrap: &str) -> String {
    format!(
        "CREATE EXTERNAL TABLE sales (id BIGINT, customer VARCHAR, revenue DOUBLE)
           STORED AS KAFKA LOCATION 'sales' OPTIONS ('bootstrap.servers' '{bootstrap}');
         CREATE EXTERNAL TABLE out (id BIGINT) STORED AS PARQUET LOCATION 'output/guarded/';
         SET spate.trigger.interval = '200ms';
         INSERT INTO out SELECT id FROM sales;"
    )
}

fn broker() -> DevBroker {
    let broker = DevBroker::start().unwrap();
    broker.create_topic("sales", 4).unwrap();
    broker
}

/// Runs a worker of this process against `url` until `stopped`.
fn worker(
    url: &str,
    ws: &std::path::Path,
    secret: &str,
    ca: Option<&std::path::Path>,
    stopped: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Result<(), spate_worker::WorkerError>> {
    let mut config = spate_worker::WorkerConfig::new(url, ws);
    config.worker_id = "w1".into();
    config.slots = 2;
    config.secret = secret.into();
    config.tls_ca = ca.map(Into::into);
    tokio::spawn(spate_worker::run(config, stopped))
}

async fn workers(client: &mut Client) -> usize {
    client
        .list_workers(ListWorkersRequest {})
        .await
        .map(|r| r.into_inner().workers.len())
        .unwrap_or(0)
}

#[track_caller]
fn assert_refused<T: std::fmt::Debug>(what: &str, result: Result<T, Status>) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    assert!(status.message().contains("secret"), "{what}: {status:?}");
}

/// Every ClientService method, called without (or with the wrong) secret.
async fn every_method_is_refused(client: &mut Client, job: &str) {
    assert_refused("ListJobs", client.list_jobs(ListJobsRequest {}).await);
    assert_refused(
        "ListWorkers",
        client.list_workers(ListWorkersRequest {}).await,
    );
    let submit = SubmitJobRequest {
        sql: "SELECT 1".into(),
        name: "intruder".into(),
        ..Default::default()
    };
    assert_refused("SubmitJob", client.submit_job(submit).await);
    let stop = StopJobRequest {
        job_id: job.into(),
        kill: true,
    };
    assert_refused("StopJob", client.stop_job(stop).await);
    let statement = RunStatementRequest {
        statement: "SELECT 1".into(),
        ..Default::default()
    };
    assert_refused("RunStatement", client.run_statement(statement).await);
    let tail = TailJobRequest {
        job_id: job.into(),
        from_batch: -1,
    };
    assert_refused("TailJob", client.tail_job(tail).await);
}

/// The pages and API routes a visitor can ask for, for job `job`.
fn pages(job: &str) -> Vec<String> {
    let mut pages: Vec<String> = [
        "/",
        "/workers/w1",
        "/api/v1/workers",
        "/api/v1/workers/w1",
        "/api/v1/jobs",
        "/api/v1/progress",
    ]
    .map(String::from)
    .into();
    for page in [
        "/jobs/{}",
        "/api/v1/jobs/{}",
        "/api/v1/jobs/{}/batches",
        "/api/v1/jobs/{}/progress",
    ] {
        pages.push(page.replace("{}", job));
    }
    pages
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_secret_every_call_and_page_needs_it() {
    let ws = tempfile::tempdir().unwrap();
    let broker = broker();
    let master = start_master_with(ws.path(), broker.bootstrap_servers(), |c| {
        c.secret = Some(SECRET.into());
    })
    .await;
    let grpc = format!("http://{}", master.grpc_addr);
    let ui = format!("http://{}", master.http_addr);
    let (stop_workers, stopped) = watch::channel(false);

    // A worker with the wrong secret is refused, and stops trying.
    let refused = tokio::time::timeout(
        Duration::from_secs(30),
        worker(&grpc, ws.path(), "guess", None, stopped.clone()),
    )
    .await
    .expect("a refused worker gives up")
    .unwrap()
    .unwrap_err()
    .to_string();
    assert!(
        refused.contains("the master refused this worker") && refused.contains("secret"),
        "{refused}"
    );
    // One with it registers and runs the job's tasks.
    let _worker = worker(&grpc, ws.path(), SECRET, None, stopped.clone());
    let mut client = dial::client(&grpc, None, SECRET).await.unwrap();
    wait_until("the worker to register", || {
        let mut client = client.clone();
        async move { workers(&mut client).await == 1 }
    })
    .await;
    let job = client
        .submit_job(SubmitJobRequest {
            sql: job_sql(broker.bootstrap_servers()),
            name: "guarded".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .job_id;

    for secret in ["", "guess", &SECRET[..SECRET.len() - 1]] {
        let mut outsider = dial::client(&grpc, None, secret).await.unwrap();
        every_method_is_refused(&mut outsider, &job).await;
    }

    // With the secret, each method answers.
    let listed = client.list_jobs(ListJobsRequest {}).await.unwrap();
    assert_eq!(listed.into_inner().jobs[0].job_id, job);
    assert_eq!(workers(&mut client).await, 1);
    let mut replies = client
        .run_statement(RunStatementRequest {
            statement: "SELECT 1 AS one".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut ended = false;
    while let Some(reply) = replies.message().await.unwrap() {
        ended |= matches!(reply.kind, Some(statement_reply::Kind::End(_)));
    }
    assert!(ended, "the statement ran to its end");
    let tail = TailJobRequest {
        job_id: job.clone(),
        from_batch: -1,
    };
    client.tail_job(tail).await.unwrap();
    let unknown = StopJobRequest {
        job_id: "no-such-job".into(),
        kill: false,
    };
    let status = client.stop_job(unknown).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "past the secret: {status:?}");

    // Every page and API route: 401 without the secret, answered with it.
    let http = http();
    for page in pages(&job) {
        let url = format!("{ui}{page}");
        let refused = http.get(&url).send().await.unwrap();
        assert_eq!(refused.status(), 401, "GET {page} without the secret");
        let body = refused.text().await.unwrap();
        assert!(!body.contains("STORED AS"), "GET {page} told: {body}");
        for (name, value) in [
            ("X-Spate-Secret", SECRET.to_string()),
            ("Authorization", format!("Bearer {SECRET}")),
        ] {
            let answered = http.get(&url).header(name, &value).send().await.unwrap();
            assert_eq!(answered.status(), 200, "GET {page} with {name}");
        }
        let wrong = http
            .get(&url)
            .header("X-Spate-Secret", "guess")
            .send()
            .await;
        assert_eq!(
            wrong.unwrap().status(),
            401,
            "GET {page} with a wrong secret"
        );
    }
    for action in ["/api/v1/jobs/no-such-job/stop", "/jobs/no-such-job/kill"] {
        let url = format!("{ui}{action}");
        assert_eq!(
            http.post(&url).send().await.unwrap().status(),
            401,
            "POST {action}"
        );
        let past = http
            .post(&url)
            .header("X-Spate-Secret", SECRET)
            .send()
            .await;
        assert_eq!(past.unwrap().status(), 404, "POST {action} with the secret");
    }
    // /healthz and /metrics (without a token of its own) stay open.
    assert_eq!(
        http.get(format!("{ui}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = http.get(format!("{ui}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.unwrap().contains("spate_workers"));

    // A browser: the page it asked for is a login form; one login, a cookie.
    let asked = http.get(format!("{ui}/jobs/{job}")).send().await.unwrap();
    assert_eq!(asked.status(), 401);
    let form = asked.text().await.unwrap();
    assert!(
        form.contains("action=\"/login\"") && form.contains("type=\"password\""),
        "{form}"
    );
    let login = |secret: &'static str, next: String| {
        let http = http.clone();
        let url = format!("{ui}/login");
        async move {
            http.post(url)
                .form(&[("secret", secret), ("next", &next)])
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(login("guess", "/".into()).await.status(), 401);
    let logged_in = login(SECRET, format!("/jobs/{job}")).await;
    assert_eq!(logged_in.status(), 303);
    assert_eq!(logged_in.headers()["location"], format!("/jobs/{job}"));
    let cookie = logged_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(SECRET),
        "the cookie proves the secret without being it"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    for page in pages(&job) {
        let url = format!("{ui}{page}");
        let answered = http
            .get(&url)
            .header("Cookie", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(answered.status(), 200, "GET {page} with the session cookie");
    }
    let forged = format!("spate_session={SECRET}");
    let refused = http.get(&ui).header("Cookie", forged).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    // After logging in, only pages of this site are a destination.
    let elsewhere = login(SECRET, "//evil.example/".into()).await;
    assert_eq!(elsewhere.headers()["location"], "/");

    let _ = stop_workers.send(true);
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_have_a_token_of_their_own() {
    let ws = tempfile::tempdir().unwrap();
    let broker = broker();
    let master = start_master_with(ws.path(), broker.bootstrap_servers(), |c| {
        c.secret = Some(SECRET.into());
        c.metrics_token = Some("scrape-me".into());
    })
    .await;
    let url = format!("http://{}/metrics", master.http_addr);
    let http = http();
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    let with_secret = http.get(&url).header("X-Spate-Secret", SECRET).send().await;
    assert_eq!(
        with_secret.unwrap().status(),
        401,
        "the token, not the secret"
    );
    let scraped = http
        .get(&url)
        .bearer_auth("scrape-me")
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    master.shutdown().await;
}

async fn tls_master(
    ws: &std::path::Path,
    bootstrap: &str,
    certs: &TestCertificates,
) -> MasterHandle {
    start_master_with(ws, bootstrap, |c| {
        c.secret = Some(SECRET.into());
        c.tls = Some(TlsFiles {
            cert: certs.cert.clone(),
            key: certs.key.clone(),
        });
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_clients_trusting_the_ca_get_in_and_others_are_refused() {
    let ws = tempfile::tempdir().unwrap();
    let broker = broker();
    let certs = TestCertificates::generate();
    let master = tls_master(ws.path(), broker.bootstrap_servers(), &certs).await;
    let grpc = format!("https://127.0.0.1:{}", master.grpc_addr.port());
    let ui = format!("https://127.0.0.1:{}", master.http_addr.port());

    // A worker and a client that trust the CA: a job runs batches.
    let (stop_workers, stopped) = watch::channel(false);
    let _worker = worker(&grpc, ws.path(), SECRET, Some(&certs.ca), stopped);
    let mut client = dial::client(&grpc, Some(&certs.ca), SECRET).await.unwrap();
    wait_until("the TLS worker to register", || {
        let mut client = client.clone();
        async move { workers(&mut client).await == 1 }
    })
    .await;
    client
        .submit_job(SubmitJobRequest {
            sql: job_sql(broker.bootstrap_servers()),
            name: "guarded".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    produce_sales(broker.bootstrap_servers(), 0..100).await;
    wait_until("a batch over TLS", || {
        let mut client = client.clone();
        async move {
            let jobs = client.list_jobs(ListJobsRequest {}).await.unwrap();
            jobs.into_inner().jobs[0].batches >= 1
        }
    })
    .await;

    // Clients that do not trust it are refused: no CA, another CA.
    for (what, ca) in [
        ("no CA", None),
        ("another CA", Some(certs.other_ca.as_path())),
    ] {
        match dial::client(&grpc, ca, SECRET).await {
            Err(DialError::Unreachable { cause, .. }) => {
                assert!(cause.contains("certificate"), "{what}: {cause}")
            }
            Ok(mut client) => {
                let refused = client.list_jobs(ListJobsRequest {}).await;
                assert!(refused.is_err(), "{what}: a client got in");
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
    // Plain text to the TLS port gets nothing.
    let plain = format!("http://127.0.0.1:{}", master.grpc_addr.port());
    if let Ok(mut client) = dial::client(&plain, None, SECRET).await {
        assert!(client.list_jobs(ListJobsRequest {}).await.is_err());
    }
    // A CA with a plain URL is a mistake said in a sentence.
    let mixed = dial::client(&plain, Some(&certs.ca), SECRET)
        .await
        .err()
        .unwrap();
    assert!(mixed.to_string().contains("use https://"), "{mixed}");

    // The UI: HTTPS with the CA; without it, or plain, refused.
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&certs.ca).unwrap()).unwrap();
    let trusting = reqwest::Client::builder()
        .add_root_certificate(ca)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = trusting
        .get(&ui)
        .header("X-Spate-Secret", SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("guarded"));
    let login = trusting
        .post(format!("{ui}/login"))
        .form(&[("secret", SECRET), ("next", "/")])
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("Secure"), "{cookie}");
    assert!(http().get(&ui).send().await.is_err(), "no CA, no page");
    let plain_ui = format!("http://127.0.0.1:{}/healthz", master.http_addr.port());
    assert!(
        !matches!(http().get(&plain_ui).send().await, Ok(r) if r.status() == 200),
        "plain HTTP to the TLS port"
    );

    let _ = stop_workers.send(true);
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_with_broken_tls_files_says_which_and_why() {
    let ws = tempfile::tempdir().unwrap();
    let certs = TestCertificates::generate();
    let start = |cert: std::path::PathBuf, key: std::path::PathBuf| {
        let mut config = spate_master::MasterConfig::new(ws.path());
        config.grpc_addr = "127.0.0.1:0".parse().unwrap();
        config.http_addr = "127.0.0.1:0".parse().unwrap();
        config.tls = Some(TlsFiles { cert, key });
        spate_master::start(config)
    };
    let missing = ws.path().join("nope.pem");
    let error = start(missing.clone(), certs.key.clone())
        .await
        .err()
        .unwrap();
    assert!(
        error
            .to_string()
            .contains("cannot read the TLS certificate")
            && error.to_string().contains("nope.pem"),
        "{error}"
    );
    let error = start(certs.key.clone(), certs.key.clone())
        .await
        .err()
        .unwrap();
    assert!(error.to_string().contains("no PEM certificate"), "{error}");
    let error = start(certs.cert.clone(), certs.cert.clone())
        .await
        .err()
        .unwrap();
    assert!(error.to_string().contains("no PEM private key"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_get_a_clear_error_and_the_cluster_goes_on() {
    let ws = tempfile::tempdir().unwrap();
    let broker = broker();
    let master = start_master_with(ws.path(), broker.bootstrap_servers(), |c| {
        c.limits.max_sql_bytes = 4 << 10;
        c.limits.max_request_bytes = 64 << 10;
        c.limits.max_jobs = 1;
    })
    .await;
    let grpc = format!("http://{}", master.grpc_addr);
    let mut client = dial::client(&grpc, None, "").await.unwrap();
    let padded = |bytes: usize| format!("SELECT 1 -- {}", "x".repeat(bytes));

    let long = SubmitJobRequest {
        sql: padded(8 << 10),
        name: "long".into(),
        ..Default::default()
    };
    let refused = client.submit_job(long).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused
            .message()
            .contains("over this cluster's limit of 4 KiB (master.max_sql_kb)"),
        "{refused:?}"
    );
    let statement = RunStatementRequest {
        statement: padded(8 << 10),
        ..Default::default()
    };
    let refused = client.run_statement(statement).await.unwrap_err();
    assert!(
        refused.message().contains("master.max_sql_kb"),
        "{refused:?}"
    );
    // Past the largest message the master decodes.
    let huge = SubmitJobRequest {
        sql: padded(1 << 20),
        name: "huge".into(),
        ..Default::default()
    };
    let refused = client.submit_job(huge).await.unwrap_err();
    assert!(
        matches!(refused.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{refused:?}"
    );
    assert!(refused.message().contains("too large"), "{refused:?}");

    // The cluster goes on: the same connection submits a job, and a
    // second job past max_jobs is refused by name.
    client
        .submit_job(SubmitJobRequest {
            sql: job_sql(broker.bootstrap_servers()),
            name: "first".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let second = client
        .submit_job(SubmitJobRequest {
            sql: job_sql(broker.bootstrap_servers()),
            name: "second".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(second.code(), Code::ResourceExhausted);
    assert!(second.message().contains("master.max_jobs"), "{second:?}");
    assert_eq!(
        client
            .list_jobs(ListJobsRequest {})
            .await
            .unwrap()
            .into_inner()
            .jobs
            .len(),
        1
    );
    master.shutdown().await;
}
