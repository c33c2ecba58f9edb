//! The web UI in a real browser: headless Chromium driven over WebDriver
//! (Debian's chromium and chromium-driver; .ci/run installs them).

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use thirtyfour::prelude::*;

/// chromedriver on a free loopback port, killed when dropped.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    fn start() -> ChromeDriver {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is needed: apt-get install chromium chromium-driver (.ci/run installs them)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        ChromeDriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(chromedriver: &ChromeDriver) -> WebDriver {
    let mut caps = DesiredCapabilities::chrome();
    caps.set_headless().unwrap();
    caps.set_no_sandbox().unwrap();
    caps.set_disable_gpu().unwrap();
    caps.add_arg("--window-size=1280,1500").unwrap();
    if std::path::Path::new("/usr/bin/chromium").exists() {
        caps.set_binary("/usr/bin/chromium").unwrap();
    }
    WebDriver::new(&chromedriver.url, caps).await.unwrap()
}

/// The visible text of the first element matching `css`.
async fn text_of(driver: &WebDriver, css: &str) -> String {
    driver
        .find(By::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Reloads until `check` finds what it wants in the page's text.
async fn wait_for_text(driver: &WebDriver, css: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(element) = driver.find(By::Css(css)).await
            && element.text().await.is_ok_and(|t| t.contains(what))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed '{what}' in {css}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        driver.refresh().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_shows_workers_and_jobs_draws_charts_and_kills_a_job() {
    let ws = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(ws.path(), 2).await;
    cluster.produce(0..2000).await;
    let id = cluster.submit("filtered").await;
    let ui = cluster.ui();
    wait_until("three batches", || async {
        get_json(&format!("{ui}/api/v1/jobs")).await[0]["batches"].as_u64() >= Some(3)
    })
    .await;

    let chromedriver = ChromeDriver::start();
    let driver = browser(&chromedriver).await;
    driver.goto(&ui).await.unwrap();
    let workers = text_of(&driver, "table#workers").await;
    assert!(
        workers.contains("w1") && workers.contains("w2"),
        "{workers}"
    );
    assert_eq!(workers.matches("ALIVE").count(), 2, "{workers}");
    let running = text_of(&driver, "table#running-jobs").await;
    assert!(
        running.contains(&id) && running.contains("RUNNING"),
        "{running}"
    );

    driver
        .find(By::LinkText(&id))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(
        driver
            .current_url()
            .await
            .unwrap()
            .as_str()
            .ends_with(&format!("/jobs/{id}"))
    );
    let charts = driver.find_all(By::Css("figure.chart")).await.unwrap();
    assert_eq!(
        charts.len(),
        5,
        "input rate, duration, scheduling delay, watermark, state"
    );
    let drawn = driver.find_all(By::Css("figure.chart svg")).await.unwrap();
    assert!(drawn.len() >= 3, "rates, durations and delays are drawn");
    let polylines = driver
        .find_all(By::Css("figure[data-chart='rates'] polyline"))
        .await
        .unwrap();
    assert_eq!(polylines.len(), 2, "input and processing rate");
    let batches = driver.find_all(By::Css("table#batches tr")).await.unwrap();
    assert!(batches.len() >= 4, "a header and three batches");
    let plan = text_of(&driver, "pre#plan").await;
    assert!(plan.contains("KafkaScanExec"), "{plan}");
    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-job.png");
    driver.screenshot(&screenshot).await.unwrap();

    driver
        .find(By::Css("button[data-kill]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let question = driver.get_alert_text().await.unwrap();
    assert!(question.contains(&format!("Kill job {id}?")), "{question}");
    driver.accept_alert().await.unwrap();
    wait_for_text(&driver, "h1", "STOPPED").await;
    driver.goto(&ui).await.unwrap();
    let finished = text_of(&driver, "table#finished-jobs").await;
    assert!(
        finished.contains(&id) && finished.contains("STOPPED"),
        "{finished}"
    );

    driver.quit().await.unwrap();
    cluster.stop().await;
}
