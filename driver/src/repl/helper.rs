//! The line editor's side of the REPL: when input is complete (a statement
//! ends at `;` outside quotes and comments, a `\command` at the line's
//! end), completion of keywords, tables, columns, functions and commands,
//! SQL keywords highlighted, and hints from history.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use rustyline::completion::{Completer, Pair};
use rustyline::highlight::{CmdKind, Highlighter};
use rustyline::hint::HistoryHinter;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Helper, Hinter};

/// The REPL's commands, with what each does (for completion and `\help`).
pub const COMMANDS: &[(&str, &str)] = &[
    ("\\jobs", "list streaming jobs"),
    ("\\workers", "list workers"),
    (
        "\\tail",
        "JOB: show a job's sink rows as batches commit (Ctrl-C returns)",
    ),
    (
        "\\stop",
        "JOB [--kill]: stop a job (after its running batch)",
    ),
    ("\\submit", "FILE: submit a job file"),
    (
        "\\explain",
        "STATEMENT: the stages a statement would run, and their plans",
    ),
    ("\\d", "[TABLE]: list tables, or a table's columns"),
    (
        "\\set",
        "[NAME VALUE]: show or change format (table, csv, json), max_rows, max_width",
    ),
    (
        "\\save",
        "[FILE.ipynb]: save this session as a notebook (default folder: workspace/notebooks)",
    ),
    (
        "\\load",
        "FILE.ipynb: show a notebook's cells and outputs; \\save then writes to it",
    ),
    ("\\run", "FILE.ipynb: run a notebook's cells again"),
    ("\\help", "this list"),
    ("\\quit", "leave (Ctrl-D too)"),
];

const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "ORDER",
    "HAVING",
    "LIMIT",
    "OFFSET",
    "JOIN",
    "LEFT",
    "RIGHT",
    "FULL",
    "INNER",
    "OUTER",
    "ON",
    "USING",
    "AS",
    "AND",
    "OR",
    "NOT",
    "IN",
    "IS",
    "NULL",
    "LIKE",
    "BETWEEN",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "DISTINCT",
    "UNION",
    "ALL",
    "INSERT",
    "INTO",
    "VALUES",
    "CREATE",
    "EXTERNAL",
    "TABLE",
    "VIEW",
    "DROP",
    "STORED",
    "LOCATION",
    "OPTIONS",
    "SET",
    "SHOW",
    "TABLES",
    "COLUMNS",
    "DESCRIBE",
    "EXPLAIN",
    "WITH",
    "ASC",
    "DESC",
    "INTERVAL",
    "CAST",
    "TRUE",
    "FALSE",
    "KAFKA",
    "PARQUET",
    "JSON",
    "CSV",
    "OVER",
    "PARTITION",
    "TIMESTAMP",
    "DOUBLE",
    "BIGINT",
    "INT",
    "VARCHAR",
    "BOOLEAN",
    "EXISTS",
    "IF",
];

/// What completion knows of the session: refreshed after each statement
/// that changes it.
#[derive(Debug, Default)]
pub struct Catalog {
    pub tables: BTreeSet<String>,
    pub columns: BTreeSet<String>,
    pub functions: BTreeSet<String>,
}

#[derive(Helper, Hinter)]
pub struct ReplHelper {
    pub catalog: Arc<Mutex<Catalog>>,
    pub color: bool,
    #[rustyline(Hinter)]
    pub hinter: HistoryHinter,
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let catalog = self.catalog.lock().unwrap_or_else(|p| p.into_inner());
        let (start, found) = completions(&catalog, line, pos);
        let pairs = found
            .into_iter()
            .map(|text| Pair {
                display: text.clone(),
                replacement: text,
            })
            .collect();
        Ok((start, pairs))
    }
}

/// What the word before byte `pos` may complete to (commands, tables,
/// columns, functions, keywords in the case typed), and where it starts.
pub fn completions(catalog: &Catalog, line: &str, pos: usize) -> (usize, Vec<String>) {
    let before = &line[..pos];
    let start = before
        .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == '\\'))
        .map_or(0, |i| {
            i + before[i..].chars().next().map_or(1, char::len_utf8)
        });
    let word = &before[start..];
    if word.is_empty() {
        return (pos, Vec::new());
    }
    if word.starts_with('\\') {
        let found = COMMANDS
            .iter()
            .filter(|(name, _)| name.starts_with(word))
            .map(|(name, _)| name.to_string())
            .collect();
        return (start, found);
    }
    let lower = word.to_lowercase();
    let mut found = Vec::new();
    let mut seen = BTreeSet::new();
    let names = catalog
        .tables
        .iter()
        .chain(&catalog.columns)
        .chain(&catalog.functions);
    for name in names {
        if name.to_lowercase().starts_with(&lower) && seen.insert(name.clone()) {
            found.push(name.clone());
        }
    }
    let upper = word.chars().next().is_some_and(char::is_uppercase);
    for keyword in KEYWORDS {
        if keyword.to_lowercase().starts_with(&lower) {
            let text = if upper {
                keyword.to_string()
            } else {
                keyword.to_lowercase()
            };
            if seen.insert(text.clone()) {
                found.push(text);
            }
        }
    }
    (start, found)
}

/// Whether `input` is ready to run: empty, a `\command`, or statements
/// that all end in `;`.
pub fn is_complete(input: &str) -> bool {
    if input.trim().is_empty() || input.trim_start().starts_with('\\') {
        return true;
    }
    split_statements(input).1.trim().is_empty()
}

impl Highlighter for ReplHelper {
    fn highlight<'l>(&self, line: &'l str, _pos: usize) -> Cow<'l, str> {
        if !self.color || line.trim_start().starts_with('\\') {
            return Cow::Borrowed(line);
        }
        Cow::Owned(highlight_sql(line))
    }

    fn highlight_hint<'h>(&self, hint: &'h str) -> Cow<'h, str> {
        if !self.color {
            return Cow::Borrowed(hint);
        }
        Cow::Owned(format!("\x1b[2m{hint}\x1b[0m"))
    }

    fn highlight_char(&self, _line: &str, _pos: usize, _kind: CmdKind) -> bool {
        self.color
    }
}

/// Keywords bold blue, strings green, comments grey.
fn highlight_sql(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + 16);
    let mut chars = line.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            let mut end = line.len();
            for (j, d) in chars.by_ref() {
                if d == '\'' {
                    end = j + 1;
                    break;
                }
            }
            out.push_str(&format!("\x1b[32m{}\x1b[0m", &line[i..end]));
        } else if c == '-' && line[i..].starts_with("--") {
            let end = line[i..].find('\n').map_or(line.len(), |n| i + n);
            out.push_str(&format!("\x1b[90m{}\x1b[0m", &line[i..end]));
            while chars.peek().is_some_and(|(j, _)| *j < end) {
                chars.next();
            }
        } else if c.is_alphabetic() || c == '_' {
            let mut end = line.len();
            while let Some((j, d)) = chars.peek() {
                if d.is_alphanumeric() || *d == '_' {
                    chars.next();
                } else {
                    end = *j;
                    break;
                }
            }
            let word = &line[i..end];
            if KEYWORDS.contains(&word.to_uppercase().as_str()) {
                out.push_str(&format!("\x1b[1;34m{word}\x1b[0m"));
            } else {
                out.push_str(word);
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Validator for ReplHelper {
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        if is_complete(ctx.input()) {
            Ok(ValidationResult::Valid(None))
        } else {
            Ok(ValidationResult::Incomplete)
        }
    }
}

/// Splits input into complete statements (each without its `;`) and what
/// is left after the last `;`. Quotes and `--` comments may hold `;`.
pub fn split_statements(input: &str) -> (Vec<String>, String) {
    let mut statements = Vec::new();
    let mut start = 0;
    let mut chars = input.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' | '"' => {
                for (_, d) in chars.by_ref() {
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek().is_some_and(|(_, d)| *d == '-') => {
                for (_, d) in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            ';' => {
                let statement = input[start..i].trim();
                if !only_comments(statement) {
                    statements.push(statement.to_string());
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    let rest = &input[start..];
    let rest = if only_comments(rest) { "" } else { rest };
    (statements, rest.to_string())
}

fn only_comments(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with("--"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_end_at_semicolons_outside_quotes_and_comments() {
        let (done, rest) =
            split_statements("SELECT ';' AS a; -- a comment; here\nSELECT 2;\nSELECT");
        assert_eq!(
            done,
            vec!["SELECT ';' AS a", "-- a comment; here\nSELECT 2"]
        );
        assert_eq!(rest, "\nSELECT");
        let (done, rest) = split_statements("-- only a comment\n");
        assert!(done.is_empty());
        assert_eq!(rest, "");
    }

    #[test]
    fn input_is_complete_when_every_statement_ends() {
        assert!(is_complete("SELECT 1;"));
        assert!(is_complete("\\jobs"));
        assert!(is_complete("  "));
        assert!(!is_complete("SELECT 1"));
        assert!(!is_complete("SELECT 1; SELECT ';'"));
    }

    #[test]
    fn completion_finds_tables_keywords_and_commands() {
        let mut catalog = Catalog::default();
        catalog.tables.insert("sales".to_string());
        let line = "SELECT * FROM sa";
        assert_eq!(
            completions(&catalog, line, line.len()),
            (14, vec!["sales".to_string()])
        );
        let (start, found) = completions(&catalog, "sel", 3);
        assert_eq!((start, found[0].as_str()), (0, "select"));
        let (_, found) = completions(&catalog, "\\jo", 3);
        assert_eq!(found, vec!["\\jobs"]);
    }

    #[test]
    fn highlighting_keeps_the_text() {
        let line = "select 'from' -- where\n, x from t";
        let plain: String = strip(&highlight_sql(line));
        assert_eq!(plain, line);
        assert!(highlight_sql(line).contains("\x1b[1;34mselect"));
    }

    fn strip(text: &str) -> String {
        let mut out = String::new();
        let mut in_escape = false;
        for c in text.chars() {
            match (in_escape, c) {
                (false, '\x1b') => in_escape = true,
                (true, 'm') => in_escape = false,
                (true, _) => {}
                (false, c) => out.push(c),
            }
        }
        out
    }
}
