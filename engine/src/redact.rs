//! Secrets out of everything shown: the values of options whose key names
//! a credential, and the passwords in URLs, become `*****` wherever a job's
//! SQL or options are displayed or logged (Spark's `spark.redaction.regex`).
//! The values still reach the tasks: only what is shown is redacted.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

/// What stands in for a redacted value.
pub const REDACTED: &str = "*****";

/// Keys whose values are credentials.
static SENSITIVE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)secret|password|passwd|token|sasl\.|ssl\.key|credentials")
        .expect("a valid pattern")
});

/// `'key' 'value'` (or `key 'value'`, or `'key' = 'value'`), as OPTIONS
/// and SET write them.
static KEY_VALUE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?P<key>'(?:[^']|'')*'|[A-Za-z_][A-Za-z0-9_.\-]*)(?P<sep>\s*=?\s*)'(?P<value>(?:[^']|'')*)'"#)
        .expect("a valid pattern")
});

/// `scheme://user:password@` in URLs.
static URL_PASSWORD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s']*:)(?P<password>[^@\s'/]+)@")
        .expect("a valid pattern")
});

/// Whether an option's key names a credential.
pub fn is_sensitive(key: &str) -> bool {
    SENSITIVE.is_match(key)
}

/// An option's value as it may be shown.
pub fn option_value<'a>(key: &str, value: &'a str) -> Cow<'a, str> {
    if is_sensitive(key) {
        Cow::Borrowed(REDACTED)
    } else {
        url_passwords(value)
    }
}

/// Text with the passwords of the URLs in it redacted.
pub fn url_passwords(text: &str) -> Cow<'_, str> {
    URL_PASSWORD.replace_all(text, format!("${{head}}{REDACTED}@"))
}

/// SQL as it may be shown: sensitive options' values and URL passwords
/// redacted, everything else as the user wrote it.
pub fn sql(text: &str) -> String {
    let options = KEY_VALUE.replace_all(text, |c: &regex::Captures| {
        let key = &c["key"];
        if is_sensitive(key.trim_matches('\'')) {
            format!("{key}{}'{REDACTED}'", &c["sep"])
        } else {
            c[0].to_string()
        }
    });
    url_passwords(&options).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted_and_the_rest_stays() {
        let text = "CREATE EXTERNAL TABLE s (id BIGINT) STORED AS KAFKA LOCATION 's'
             OPTIONS ('kafka.sasl.password' 'hunter2', 'format' 'json', kafka.ssl.key.password 'k3y',
                      'api_token' = 'zq9x');
           CREATE EXTERNAL TABLE t STORED AS POSTGRES LOCATION 'postgresql://app:pa55@db:5432/x';
           INSERT INTO t SELECT id FROM s WHERE id > 5;";
        let shown = sql(text);
        for secret in ["hunter2", "k3y", "zq9x", "pa55"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("'kafka.sasl.password' '*****'"), "{shown}");
        assert!(shown.contains("'format' 'json'"), "{shown}");
        assert!(
            shown.contains("postgresql://app:*****@db:5432/x"),
            "{shown}"
        );
        assert!(shown.contains("WHERE id > 5"), "{shown}");
        assert_eq!(option_value("format", "json"), "json");
        assert_eq!(option_value("sasl.password", "x"), REDACTED);
    }
}
