//! The shared workspace, Spate's simulated DFS. Every read and write goes
//! through `object_store`, and every path a user gives is checked to stay
//! inside the workspace root.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{EngineError, Result};

/// Where Spate keeps its own files inside the workspace.
pub const SPATE_DIR: &str = "_spate";

#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
    store: Arc<dyn ObjectStore>,
}

impl Workspace {
    /// Opens (creating if needed) the workspace at `root`.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref();
        std::fs::create_dir_all(root)?;
        let root = root.canonicalize()?;
        let store = LocalFileSystem::new_with_prefix(&root)?;
        Ok(Workspace {
            root,
            store: Arc::new(store),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Checks a path given in SQL or on the command line and returns it
    /// relative to the workspace root, `/`-separated, without a trailing `/`.
    /// Refuses absolute paths, `..`, and symlinks that lead out.
    pub fn resolve_user_path(&self, path: &str) -> Result<String> {
        let escape = |why: &str| EngineError::PathEscape {
            path: path.to_string(),
            why: why.to_string(),
        };
        let trimmed = path.trim();
        if trimmed.is_empty() {
            return Err(escape("the path is empty"));
        }
        let candidate = Path::new(trimmed);
        let mut parts = Vec::new();
        for component in candidate.components() {
            match component {
                Component::Normal(p) => parts.push(
                    p.to_str()
                        .ok_or_else(|| escape("the path is not valid UTF-8"))?
                        .to_string(),
                ),
                Component::CurDir => {}
                Component::ParentDir => {
                    return Err(escape(
                        "'..' is not allowed; give a path relative to the workspace",
                    ));
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(escape(
                        "absolute paths are not allowed; give a path relative to the workspace",
                    ));
                }
            }
        }
        if parts.is_empty() {
            return Err(escape("the path names the workspace root itself"));
        }
        // A symlink inside the workspace may point out of it: check the
        // deepest part of the path that exists.
        let mut existing = self.root.clone();
        for part in &parts {
            let next = existing.join(part);
            if !next.exists() && next.symlink_metadata().is_err() {
                break;
            }
            existing = next;
        }
        let real = existing
            .canonicalize()
            .map_err(|_| escape("a symlink in the path leads nowhere"))?;
        if !real.starts_with(&self.root) {
            return Err(escape("a symlink in the path leads out of the workspace"));
        }
        Ok(parts.join("/"))
    }

    pub fn absolute(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    pub async fn put(&self, relative: &str, bytes: impl Into<Bytes>) -> Result<()> {
        // LocalFileSystem stages the write and renames it into place, so a
        // reader never sees a half-written file.
        self.store
            .put(&StorePath::from(relative), PutPayload::from(bytes.into()))
            .await?;
        Ok(())
    }

    /// Writes a file that must not exist yet: the exclusive create that
    /// makes one writer per log entry, on a local disk as on an object
    /// store. Returns false, writing nothing, where the file exists.
    pub async fn create(&self, relative: &str, bytes: impl Into<Bytes>) -> Result<bool> {
        let payload = PutPayload::from(bytes.into());
        match self
            .store
            .put_opts(&StorePath::from(relative), payload, PutMode::Create.into())
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// `create` for a JSON value.
    pub async fn create_json<T: Serialize>(&self, relative: &str, value: &T) -> Result<bool> {
        self.create(relative, serde_json::to_vec_pretty(value)?)
            .await
    }

    pub async fn get(&self, relative: &str) -> Result<Option<Bytes>> {
        match self.store.get(&StorePath::from(relative)).await {
            Ok(found) => Ok(Some(found.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn put_json<T: Serialize>(&self, relative: &str, value: &T) -> Result<()> {
        self.put(relative, serde_json::to_vec_pretty(value)?).await
    }

    pub async fn get_json<T: DeserializeOwned>(&self, relative: &str) -> Result<Option<T>> {
        match self.get(relative).await? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// File names (last path segment) directly below `dir`.
    pub async fn list_names(&self, dir: &str) -> Result<Vec<String>> {
        // Below a file (a table whose LOCATION is one file) nothing is listed.
        if self.root.join(dir).ancestors().any(|p| p.is_file()) {
            return Ok(Vec::new());
        }
        let prefix = StorePath::from(dir);
        let listed = self
            .store
            .list_with_delimiter(Some(&prefix))
            .await
            .or_else(|e| match e {
                object_store::Error::NotFound { .. } => Ok(object_store::ListResult {
                    common_prefixes: vec![],
                    objects: vec![],
                }),
                e => Err(e),
            })?;
        let mut names: Vec<String> = listed
            .objects
            .iter()
            .filter_map(|o| o.location.filename().map(str::to_string))
            .chain(
                listed
                    .common_prefixes
                    .iter()
                    .filter_map(|p| p.filename().map(str::to_string)),
            )
            .collect();
        names.sort();
        Ok(names)
    }

    /// Deletes everything below `dir`.
    pub async fn delete_dir(&self, dir: &str) -> Result<()> {
        use futures::TryStreamExt;
        let prefix = StorePath::from(dir);
        let locations: Vec<StorePath> = self
            .store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await?;
        for location in locations {
            self.delete(location.as_ref()).await?;
        }
        Ok(())
    }

    /// Deletes the files directly below `dir` whose names `doomed` picks;
    /// returns how many went.
    pub async fn delete_names(&self, dir: &str, doomed: impl Fn(&str) -> bool) -> Result<usize> {
        let mut deleted = 0;
        for name in self.list_names(dir).await? {
            if doomed(&name) {
                self.delete(&format!("{dir}/{name}")).await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    pub async fn delete(&self, relative: &str) -> Result<()> {
        match self.store.delete(&StorePath::from(relative)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_workspace() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        assert_eq!(ws.resolve_user_path("output/x/").unwrap(), "output/x");
        assert_eq!(
            ws.resolve_user_path("./data/a.json").unwrap(),
            "data/a.json"
        );
        for bad in ["../etc", "/etc/passwd", "output/../../x", ""] {
            assert!(
                ws.resolve_user_path(bad).is_err(),
                "{bad} should be refused"
            );
        }
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        let err = ws.resolve_user_path("link/x").unwrap_err().to_string();
        assert!(err.contains("symlink"), "{err}");
    }

    #[tokio::test]
    async fn create_writes_once() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        assert!(ws.create("log/0", "first").await.unwrap());
        assert!(!ws.create("log/0", "second").await.unwrap());
        assert_eq!(ws.get("log/0").await.unwrap().unwrap(), "first");
    }
}
