//! The peers B6 and B7 run as Python scripts (PySpark, PyFlink).

use std::ffi::OsStr;
use std::process::Command;

use crate::Error;

/// Whether `python3` can import `module`.
pub fn imports(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `bench/<script>` with `python3` and returns what it printed on
/// stdout; a failure is an error with the end of its stderr (a JVM's
/// stack traces run to hundreds of lines).
pub fn run_script(what: &str, script: &str, args: &[&OsStr]) -> Result<String, Error> {
    let path = format!("{}/{script}", env!("CARGO_MANIFEST_DIR"));
    let ran = Command::new("python3").arg(path).args(args).output()?;
    if !ran.status.success() {
        let stderr = String::from_utf8_lossy(&ran.stderr);
        let mut last: Vec<&str> = stderr.lines().rev().take(20).collect();
        last.reverse();
        return Err(format!(
            "the {what} run failed ({}); the end of what it printed:\n{}",
            ran.status,
            last.join("\n")
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&ran.stdout).into_owned())
}
