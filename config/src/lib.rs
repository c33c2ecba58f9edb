//! Spate's settings: `defaults.toml` (built in), then the file named by
//! `SPATE_CONFIG`, then `SPATE_<SECTION>_<KEY>` environment variables. The
//! programs' flags take their defaults from here, so a flag, its variable
//! and the engine's constants cannot disagree.

use std::sync::LazyLock;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::{Table, Value};

/// The built-in defaults, documented setting by setting.
pub const DEFAULTS: &str = include_str!("../defaults.toml");

/// Environment variables that predate the `SPATE_<SECTION>_<KEY>` rule.
const ALIASES: &[(&str, &str)] = &[("SPATE_MASTER", "client.master")];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub workspace: String,
    pub secret: String,
    pub client: Client,
    pub master: Master,
    pub ui: Ui,
    pub worker: Worker,
    pub kafka: Kafka,
    pub job: Job,
    pub query: Query,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Client {
    pub master: String,
    pub tls_ca: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Master {
    pub bind: String,
    pub tls_cert: String,
    pub tls_key: String,
    pub max_request_mb: usize,
    pub max_sql_kb: usize,
    pub max_queries: usize,
    pub max_jobs: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ui {
    pub bind: String,
    pub metrics_token: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Worker {
    /// 0: one per core.
    pub slots: u32,
    pub memory_mb: u64,
    pub state_memory_mb: u64,
    #[serde(deserialize_with = "duration")]
    pub heartbeat_interval: Duration,
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kafka {
    pub bootstrap: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    #[serde(deserialize_with = "duration")]
    pub trigger_interval: Duration,
    pub max_task_failures: u32,
    pub retained_batches: u64,
    pub manifest_compaction: u64,
    pub state_snapshot_interval: u64,
    /// 0: the alive workers' slots at submit.
    pub shuffle_partitions: usize,
    #[serde(deserialize_with = "duration")]
    pub kafka_retry_min: Duration,
    #[serde(deserialize_with = "duration")]
    pub kafka_retry_max: Duration,
    #[serde(deserialize_with = "duration")]
    pub cancel_grace: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    pub max_task_failures: u32,
}

impl Worker {
    /// Slots as configured, or the machine's cores.
    pub fn slots_or_cores(&self) -> u32 {
        if self.slots > 0 {
            self.slots
        } else {
            std::thread::available_parallelism().map_or(2, |n| n.get() as u32)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the settings file {path} (SPATE_CONFIG): {why}")]
    File { path: String, why: String },
    #[error("{origin}: {why}")]
    Value { origin: String, why: String },
}

/// The settings of this process, read once.
pub fn settings() -> &'static Settings {
    static SETTINGS: LazyLock<Settings> = LazyLock::new(|| {
        Settings::load(|name| std::env::var(name).ok()).unwrap_or_else(|e| {
            eprintln!("error: {e}");
            std::process::exit(2);
        })
    });
    &SETTINGS
}

impl Settings {
    /// Reads the defaults, the `SPATE_CONFIG` file and the environment as
    /// `env` gives it.
    pub fn load(env: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let mut table: Table = DEFAULTS.parse().expect("defaults.toml is valid TOML");
        if let Some(path) = env("SPATE_CONFIG").filter(|p| !p.is_empty()) {
            let file_error = |why: String| ConfigError::File {
                path: path.clone(),
                why,
            };
            let text = std::fs::read_to_string(&path).map_err(|e| file_error(e.to_string()))?;
            let overrides: Table = text
                .parse()
                .map_err(|e: toml::de::Error| file_error(e.message().to_string()))?;
            merge(&mut table, overrides, "", &path)?;
        }
        for (section, key, default) in leaves(&table) {
            let path = if section.is_empty() {
                key.clone()
            } else {
                format!("{section}.{key}")
            };
            let mut names = vec![env_name(&section, &key)];
            names.extend(
                ALIASES
                    .iter()
                    .filter(|(_, p)| *p == path)
                    .map(|(n, _)| n.to_string()),
            );
            // The rule's own name wins over an alias when both are set.
            let Some((name, raw)) = names
                .into_iter()
                .find_map(|name| env(&name).map(|value| (name, value)))
            else {
                continue;
            };
            let value = parse_like(&default, &raw).map_err(|why| ConfigError::Value {
                origin: format!("{name}='{raw}'"),
                why,
            })?;
            set(&mut table, &section, &key, value);
        }
        Table::try_into(table).map_err(|e: toml::de::Error| ConfigError::Value {
            origin: "settings".to_string(),
            why: e.message().to_string(),
        })
    }
}

/// `SPATE_<SECTION>_<KEY>`, or `SPATE_<KEY>` at the top.
pub fn env_name(section: &str, key: &str) -> String {
    let path = if section.is_empty() {
        key.to_string()
    } else {
        format!("{section}_{key}")
    };
    format!("SPATE_{}", path.to_uppercase())
}

/// Every setting as (section, key, default); the top level's section is "".
fn leaves(table: &Table) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (name, value) in table {
        match value {
            Value::Table(section) => {
                for (key, value) in section {
                    out.push((name.clone(), key.clone(), value.clone()));
                }
            }
            other => out.push((String::new(), name.clone(), other.clone())),
        }
    }
    out
}

fn set(table: &mut Table, section: &str, key: &str, value: Value) {
    let target = if section.is_empty() {
        table
    } else {
        table
            .get_mut(section)
            .and_then(Value::as_table_mut)
            .expect("the section exists in the defaults")
    };
    target.insert(key.to_string(), value);
}

/// Lays a settings file over the defaults; a key the defaults do not have
/// is a mistake worth a clear error, not silence.
fn merge(base: &mut Table, overrides: Table, prefix: &str, file: &str) -> Result<(), ConfigError> {
    for (key, value) in overrides {
        let path = format!("{prefix}{key}");
        let unknown = || ConfigError::Value {
            origin: file.to_string(),
            why: format!("unknown setting '{path}' (defaults.toml lists every setting)"),
        };
        match (base.get_mut(&key), value) {
            (Some(Value::Table(section)), Value::Table(inner)) => {
                merge(section, inner, &format!("{path}."), file)?
            }
            (Some(Value::Table(_)), _) => {
                return Err(ConfigError::Value {
                    origin: file.to_string(),
                    why: format!("'{path}' is a section ([{path}]), not a value"),
                });
            }
            (Some(existing), value) => *existing = value,
            (None, _) => return Err(unknown()),
        }
    }
    Ok(())
}

/// An environment variable's text as a value of the default's type.
fn parse_like(default: &Value, raw: &str) -> Result<Value, String> {
    let raw = raw.trim();
    match default {
        Value::Integer(_) => raw
            .parse()
            .map(Value::Integer)
            .map_err(|_| "expected a whole number".to_string()),
        Value::Float(_) => raw
            .parse()
            .map(Value::Float)
            .map_err(|_| "expected a number".to_string()),
        Value::Boolean(_) => match raw.to_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(Value::Boolean(true)),
            "false" | "0" | "no" => Ok(Value::Boolean(false)),
            _ => Err("expected true or false".to_string()),
        },
        _ => Ok(Value::String(raw.to_string())),
    }
}

/// "500ms", "10s", "2m", "1h" (humantime's forms), or a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return (seconds >= 0.0 && seconds.is_finite()).then(|| Duration::from_secs_f64(seconds));
    }
    humantime::parse_duration(text).ok()
}

fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Seconds(f64),
        Written(String),
    }
    let given = Text::deserialize(deserializer)?;
    let text = match given {
        Text::Seconds(s) => s.to_string(),
        Text::Written(s) => s,
    };
    parse_duration(&text).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "'{text}' is not a duration; write it as \"500ms\", \"10s\", \"2m\" or a number of seconds"
        ))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::load(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_load_and_every_setting_has_its_variable() {
        let s = load(&[]).unwrap();
        assert_eq!(s.worker.timeout, Duration::from_secs(10));
        assert_eq!(s.job.max_task_failures, 4);
        let s = load(&[
            ("SPATE_WORKER_SLOTS", "3"),
            ("SPATE_WORKER_TIMEOUT", "2.5"),
            ("SPATE_JOB_TRIGGER_INTERVAL", "250ms"),
            ("SPATE_WORKSPACE", "/tmp/ws"),
            ("SPATE_MASTER", "http://m:7077"),
        ])
        .unwrap();
        assert_eq!(s.worker.slots, 3);
        assert_eq!(s.worker.timeout, Duration::from_millis(2500));
        assert_eq!(s.job.trigger_interval, Duration::from_millis(250));
        assert_eq!(s.workspace, "/tmp/ws");
        assert_eq!(s.client.master, "http://m:7077");
    }

    #[test]
    fn bad_values_say_which_variable_and_why() {
        let e = load(&[("SPATE_WORKER_SLOTS", "many")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "SPATE_WORKER_SLOTS='many': expected a whole number"
        );
        let e = load(&[("SPATE_JOB_CANCEL_GRACE", "soon")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("'soon' is not a duration"), "{e}");
    }

    #[test]
    fn a_settings_file_overrides_defaults_and_refuses_unknown_keys() {
        let dir = std::env::temp_dir().join(format!("spate-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(&good, "[worker]\nslots = 6\n").unwrap();
        let path = good.display().to_string();
        assert_eq!(load(&[("SPATE_CONFIG", &path)]).unwrap().worker.slots, 6);
        // The environment wins over the file.
        let s = load(&[("SPATE_CONFIG", &path), ("SPATE_WORKER_SLOTS", "1")]).unwrap();
        assert_eq!(s.worker.slots, 1);
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "[worker]\nslot = 6\n").unwrap();
        let e = load(&[("SPATE_CONFIG", &bad.display().to_string())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown setting 'worker.slot'"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
