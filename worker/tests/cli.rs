//! The `worker` binary's command line. (These tests also make `cargo test`
//! build the binary, which the driver's cluster tests start as a process.)

use std::process::Command;

#[test]
fn help_names_every_setting() {
    let out = Command::new(env!("CARGO_BIN_EXE_worker"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--master",
        "--slots",
        "--memory-mb",
        "--state-memory-mb",
        "--workspace",
        "--id",
        "--secret",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}
