//! The shared workspace, Spate's simulated DFS: a folder every process
//! mounts at the same path, or a bucket of an S3-protocol object store.
//! Every read and write goes through `object_store`, and every path a user
//! gives is checked to stay inside the workspace.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{EngineError, Result};

/// Where Spate keeps its own files inside the workspace.
pub const SPATE_DIR: &str = "_spate";

/// Where a workspace lives, as given on a command line: a local folder, or
/// `s3://bucket/prefix` (reached with the standard `AWS_*` environment
/// variables: `AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkspaceLocation {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl WorkspaceLocation {
    /// The local folder of a workspace on disk.
    pub fn local_root(&self) -> Option<&Path> {
        match self {
            WorkspaceLocation::Local(root) => Some(root),
            WorkspaceLocation::S3 { .. } => None,
        }
    }

    /// Where a client keeps what is its own (notebooks, logs): the
    /// workspace's folder when it is on disk, else the current directory.
    pub fn client_folder(&self) -> PathBuf {
        self.local_root()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    }
}

impl FromStr for WorkspaceLocation {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!(
                    "'{text}' names no bucket; an S3 workspace is s3://bucket or s3://bucket/prefix"
                ));
            }
            return Ok(WorkspaceLocation::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        if let Some((scheme, _)) = text.split_once("://") {
            return Err(format!(
                "'{text}': a workspace is a folder or s3://bucket/prefix, not a {scheme}:// URL"
            ));
        }
        if text.is_empty() {
            return Err("the workspace is empty; give a folder or s3://bucket/prefix".into());
        }
        Ok(WorkspaceLocation::Local(PathBuf::from(text)))
    }
}

impl fmt::Display for WorkspaceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkspaceLocation::Local(root) => write!(f, "{}", root.display()),
            WorkspaceLocation::S3 { bucket, prefix } if prefix.is_empty() => {
                write!(f, "s3://{bucket}")
            }
            WorkspaceLocation::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

impl From<PathBuf> for WorkspaceLocation {
    fn from(root: PathBuf) -> Self {
        WorkspaceLocation::Local(root)
    }
}

impl From<&Path> for WorkspaceLocation {
    fn from(root: &Path) -> Self {
        WorkspaceLocation::Local(root.to_path_buf())
    }
}

impl From<&WorkspaceLocation> for WorkspaceLocation {
    fn from(location: &WorkspaceLocation) -> Self {
        location.clone()
    }
}

/// What a path in the workspace names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Folder,
}

#[derive(Debug, Clone)]
pub struct Workspace {
    /// A local root is canonical, so that symlinks can be checked against it.
    location: WorkspaceLocation,
    /// Rooted at the workspace: Spate's own reads and writes.
    store: Arc<dyn ObjectStore>,
    /// The store DataFusion reads and writes tables through, registered at
    /// this URL in a session's runtime (the bucket's root: table URLs
    /// carry the prefix). None on disk, which DataFusion reaches itself.
    table_store: Option<(ObjectStoreUrl, Arc<dyn ObjectStore>)>,
}

impl Workspace {
    /// Opens the workspace at `location`, creating a local folder if needed.
    /// An object store is first reached by the first read or write; see
    /// [`Workspace::probe`].
    pub fn open(location: impl Into<WorkspaceLocation>) -> Result<Self> {
        match location.into() {
            WorkspaceLocation::Local(root) => {
                std::fs::create_dir_all(&root)?;
                let root = root.canonicalize()?;
                let store = LocalFileSystem::new_with_prefix(&root)?;
                Ok(Workspace {
                    location: WorkspaceLocation::Local(root),
                    store: Arc::new(store),
                    table_store: None,
                })
            }
            WorkspaceLocation::S3 { bucket, prefix } => {
                Self::open_s3(AmazonS3Builder::from_env(), bucket, prefix)
            }
        }
    }

    /// The workspace below `prefix` in `bucket`, reached as `s3` is
    /// configured (`open` configures it from the environment).
    pub fn open_s3(s3: AmazonS3Builder, bucket: String, prefix: String) -> Result<Self> {
        let s3: Arc<dyn ObjectStore> = Arc::new(s3.with_bucket_name(&bucket).build()?);
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            s3.clone()
        } else {
            Arc::new(PrefixStore::new(s3.clone(), prefix.as_str()))
        };
        let url = ObjectStoreUrl::parse(format!("s3://{bucket}"))?;
        Ok(Workspace {
            location: WorkspaceLocation::S3 { bucket, prefix },
            store,
            table_store: Some((url, s3)),
        })
    }

    /// Reaches the workspace once, so that a wrong endpoint, bucket or key
    /// is one error at start rather than at the first batch.
    pub async fn probe(&self) -> Result<()> {
        let prefix = StorePath::from(SPATE_DIR);
        match self.store.list_with_delimiter(Some(&prefix)).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(EngineError::Execution(format!(
                "the workspace {} cannot be reached: {e}",
                self.location
            ))),
        }
    }

    pub fn location(&self) -> &WorkspaceLocation {
        &self.location
    }

    /// The workspace's folder when it is on disk.
    pub fn local_root(&self) -> Option<&Path> {
        self.location.local_root()
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Lets DataFusion in `runtime` reach the workspace's tables.
    pub fn register_in(&self, runtime: &RuntimeEnv) {
        if let Some((url, store)) = &self.table_store {
            runtime.register_object_store(url.as_ref(), store.clone());
        }
    }

    /// The URL DataFusion lists or reads `relative` at; a folder's ends in `/`.
    pub fn table_url(&self, relative: &str, kind: EntryKind) -> Result<ListingTableUrl> {
        let slash = if kind == EntryKind::Folder { "/" } else { "" };
        let url = match &self.location {
            WorkspaceLocation::Local(root) => {
                format!("{}{slash}", root.join(relative).to_string_lossy())
            }
            WorkspaceLocation::S3 { bucket, prefix } if prefix.is_empty() => {
                format!("s3://{bucket}/{relative}{slash}")
            }
            WorkspaceLocation::S3 { bucket, prefix } => {
                format!("s3://{bucket}/{prefix}/{relative}{slash}")
            }
        };
        Ok(ListingTableUrl::parse(url)?)
    }

    /// Whether `relative` is a file, a folder (anything below it), or nothing.
    pub async fn entry_kind(&self, relative: &str) -> Result<Option<EntryKind>> {
        if let Some(root) = self.local_root() {
            let path = root.join(relative);
            return Ok(match path.metadata() {
                Ok(meta) if meta.is_dir() => Some(EntryKind::Folder),
                Ok(_) => Some(EntryKind::File),
                Err(_) => None,
            });
        }
        let path = StorePath::from(relative);
        match self.store.head(&path).await {
            Ok(_) => return Ok(Some(EntryKind::File)),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        use futures::StreamExt;
        match self.store.list(Some(&path)).next().await {
            Some(Ok(_)) => Ok(Some(EntryKind::Folder)),
            None | Some(Err(object_store::Error::NotFound { .. })) => Ok(None),
            Some(Err(e)) => Err(e.into()),
        }
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
        // A symlink inside a local workspace may point out of it: check the
        // deepest part of the path that exists. An object store has none.
        let Some(root) = self.local_root() else {
            return Ok(parts.join("/"));
        };
        let mut existing = root.to_path_buf();
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
        if !real.starts_with(root) {
            return Err(escape("a symlink in the path leads out of the workspace"));
        }
        Ok(parts.join("/"))
    }

    pub async fn put(&self, relative: &str, bytes: impl Into<Bytes>) -> Result<()> {
        // LocalFileSystem stages the write and renames it into place, and an
        // object store's PUT is atomic, so a reader never sees half a file.
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
        // Below a file (a table whose LOCATION is one file) nothing is listed;
        // LocalFileSystem would say the path is no folder.
        if let Some(root) = self.local_root()
            && root.join(dir).ancestors().any(|p| p.is_file())
        {
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

    #[test]
    fn locations_parse_and_print() {
        let s3: WorkspaceLocation = "s3://bucket/a/b/".parse().unwrap();
        assert_eq!(
            s3,
            WorkspaceLocation::S3 {
                bucket: "bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(s3.to_string(), "s3://bucket/a/b");
        assert_eq!(
            "s3://b".parse::<WorkspaceLocation>().unwrap().to_string(),
            "s3://b"
        );
        assert_eq!(
            "workspace".parse::<WorkspaceLocation>().unwrap(),
            WorkspaceLocation::Local("workspace".into())
        );
        for bad in ["s3://", "s3:///x", "gs://bucket", ""] {
            let err = bad.parse::<WorkspaceLocation>().unwrap_err();
            assert!(err.contains("s3://bucket"), "{bad}: {err}");
        }
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
