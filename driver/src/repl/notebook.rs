//! The session as a Jupyter notebook (nbformat 4.5): one code cell per
//! statement or command, with its output as text/plain and, for rows, a
//! text/html table, so JupyterLab opens it with the results in place.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::DriverError;

/// One executed cell.
#[derive(Debug, Clone)]
pub struct Cell {
    pub execution_count: usize,
    pub source: String,
    pub output: Output,
}

#[derive(Debug, Clone)]
pub enum Output {
    /// A message or rows as text, and rows as an HTML table.
    Result {
        text: String,
        html: Option<String>,
    },
    Error(String),
}

#[derive(Serialize, Deserialize)]
struct Notebook {
    nbformat: u32,
    nbformat_minor: u32,
    metadata: Value,
    cells: Vec<NotebookCell>,
}

#[derive(Serialize, Deserialize)]
struct NotebookCell {
    cell_type: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    metadata: Value,
    source: Source,
    #[serde(default)]
    outputs: Vec<Value>,
    #[serde(default)]
    execution_count: Option<usize>,
}

/// nbformat allows a string or a list of lines.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Source {
    Text(String),
    Lines(Vec<String>),
}

impl Source {
    fn text(&self) -> String {
        match self {
            Source::Text(t) => t.clone(),
            Source::Lines(lines) => lines.concat(),
        }
    }
}

/// Text as nbformat's list of lines, each but the last ending in '\n'.
fn lines(text: &str) -> Vec<String> {
    text.split_inclusive('\n').map(str::to_string).collect()
}

/// Where `\save` and `\load` put a bare file name: `<workspace>/notebooks/`.
pub fn resolve(path: &str, workspace: &Path) -> PathBuf {
    let path = Path::new(path);
    let path = if path.components().count() == 1 {
        workspace.join("notebooks").join(path)
    } else {
        path.to_path_buf()
    };
    if path.extension().is_none() {
        path.with_extension("ipynb")
    } else {
        path
    }
}

pub fn save(path: &Path, cells: &[Cell]) -> Result<(), DriverError> {
    let notebook = Notebook {
        nbformat: 4,
        nbformat_minor: 5,
        metadata: json!({
            "kernelspec": {"name": "spate", "display_name": "Spate SQL", "language": "sql"},
            "language_info": {"name": "sql", "file_extension": ".sql"},
        }),
        cells: cells
            .iter()
            .enumerate()
            .map(|(index, cell)| NotebookCell {
                cell_type: "code".to_string(),
                id: Some(format!("cell-{}", index + 1)),
                metadata: Value::Object(Map::new()),
                // A notebook is shared: credentials in OPTIONS stay out of it.
                source: Source::Lines(lines(&spate_engine::redact::sql(&cell.source))),
                outputs: vec![output_json(cell)],
                execution_count: Some(cell.execution_count),
            })
            .collect(),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| DriverError::Usage(format!("cannot create {}: {e}", dir.display())))?;
    }
    let text = serde_json::to_string_pretty(&notebook)
        .map_err(|e| DriverError::Usage(format!("cannot encode the notebook: {e}")))?;
    std::fs::write(path, text + "\n")
        .map_err(|e| DriverError::Usage(format!("cannot write {}: {e}", path.display())))
}

fn output_json(cell: &Cell) -> Value {
    match &cell.output {
        Output::Result { text, html } => {
            let mut data = Map::new();
            data.insert("text/plain".into(), json!(lines(text)));
            if let Some(html) = html {
                data.insert("text/html".into(), json!(lines(html)));
            }
            json!({
                "output_type": "execute_result",
                "execution_count": cell.execution_count,
                "data": data,
                "metadata": {},
            })
        }
        Output::Error(message) => json!({
            "output_type": "error",
            "ename": "Error",
            "evalue": message,
            "traceback": [message],
        }),
    }
}

/// A notebook's code cells: their sources and saved text outputs.
pub fn load(path: &Path) -> Result<Vec<(String, Option<String>)>, DriverError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| DriverError::Usage(format!("cannot read {}: {e}", path.display())))?;
    let notebook: Notebook = serde_json::from_str(&text).map_err(|e| {
        DriverError::Usage(format!(
            "{} is not an nbformat 4 notebook: {e}",
            path.display()
        ))
    })?;
    if notebook.nbformat != 4 {
        return Err(DriverError::Usage(format!(
            "{} is nbformat {}; Spate reads nbformat 4",
            path.display(),
            notebook.nbformat
        )));
    }
    Ok(notebook
        .cells
        .into_iter()
        .filter(|c| c.cell_type == "code")
        .map(|c| {
            let output = c.outputs.iter().find_map(|o| {
                let plain = o.get("data")?.get("text/plain")?;
                Some(match plain {
                    Value::Array(parts) => parts.iter().filter_map(Value::as_str).collect(),
                    other => other.as_str()?.to_string(),
                })
            });
            (c.source.text(), output)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_notebook_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = resolve("session", dir.path());
        assert_eq!(path, dir.path().join("notebooks/session.ipynb"));
        let cells = vec![
            Cell {
                execution_count: 1,
                source: "SELECT 1\n  AS one".to_string(),
                output: Output::Result {
                    text: "one\n1".to_string(),
                    html: Some("<table></table>".to_string()),
                },
            },
            Cell {
                execution_count: 2,
                source: "SELECT nope".to_string(),
                output: Output::Error("no column nope".to_string()),
            },
        ];
        save(&path, &cells).unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!(
            loaded[0],
            ("SELECT 1\n  AS one".to_string(), Some("one\n1".to_string()))
        );
        assert_eq!(loaded[1], ("SELECT nope".to_string(), None));
    }
}
