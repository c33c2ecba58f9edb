//! The `master` binary's command line. (These tests also make `cargo test`
//! build the binary, which the driver's cluster tests start as a process.)

use std::process::Command;

#[test]
fn help_names_every_setting() {
    let out = Command::new(env!("CARGO_BIN_EXE_master"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--bind",
        "--ui-bind",
        "--workspace",
        "--worker-timeout",
        "--kafka-bootstrap",
        "--secret",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn a_taken_port_is_one_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_master"))
        .args([
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--ui-bind",
            "127.0.0.1:0",
        ])
        .arg("--workspace")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
