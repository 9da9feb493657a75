//! Model resolution: a local directory, a single `.gguf` file, or a Hugging Face Hub id.
//!
//! Hub ids resolve through the standard cache layout shared with Python's
//! `huggingface_hub` (`models--org--name/{refs,snapshots,blobs,.no_exist}`), honouring
//! HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE, HF_TOKEN and HF_ENDPOINT. Downloads go through
//! the `hf-hub` crate, with a progress bar on a terminal.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};

use crate::error::{Error, Result};

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
pub const DEFAULT_REVISION: &str = "main";

/// Where and how to look for Hub models. `from_env` reads the variables Python users set.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// Branch, tag or commit; `None` means `main` (or the `@rev` suffix of the id).
    pub revision: Option<String>,
    /// Never touch the network (HF_HUB_OFFLINE=1).
    pub offline: bool,
    /// The hub cache folder (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub).
    pub cache_dir: PathBuf,
    /// Bearer token for gated and private repos (HF_TOKEN, else HF_HOME/token).
    pub token: Option<String>,
    /// Hub base URL (HF_ENDPOINT).
    pub endpoint: String,
    /// Show a progress bar while downloading (default: when stderr is a terminal).
    pub progress: bool,
}

impl Default for HubOptions {
    fn default() -> Self {
        Self::from_env()
    }
}

impl HubOptions {
    pub fn from_env() -> Self {
        Self::from_vars(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// Builds options from a variable lookup, so tests need not touch the process environment.
    /// Empty values count as unset; a leading `~/` in a path is the home folder, as in Python.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let var = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        let home = var("HOME");
        let path = |v: String| match (v.strip_prefix("~/"), &home) {
            (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
            _ => PathBuf::from(v),
        };
        let hf_home = var("HF_HOME").map(path).unwrap_or_else(|| {
            let base = var("XDG_CACHE_HOME")
                .map(path)
                .or_else(|| home.as_ref().map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from(".cache"));
            base.join("huggingface")
        });
        let cache_dir = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(path)
            .unwrap_or_else(|| hf_home.join("hub"));
        let token = var("HF_TOKEN")
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
            .map(|t| t.trim().to_string())
            .or_else(|| {
                let file = var("HF_TOKEN_PATH")
                    .map(path)
                    .unwrap_or(hf_home.join("token"));
                std::fs::read_to_string(file)
                    .ok()
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
            });
        let offline = ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"].iter().any(|k| {
            var(k).is_some_and(|v| {
                matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "1" | "on" | "yes" | "true"
                )
            })
        });
        Self {
            revision: None,
            offline,
            cache_dir,
            token,
            endpoint: var("HF_ENDPOINT")
                .map(|e| e.trim().trim_end_matches('/').to_string())
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()),
            progress: std::io::stderr().is_terminal(),
        }
    }
}

/// A resolved model: where its files come from.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// A folder in Hugging Face format (config.json, tokenizer.json, *.safetensors ...).
    Directory(PathBuf),
    /// One self-contained GGUF file.
    GgufFile(PathBuf),
    /// A Hub repository, fetched into (or read from) the cache on demand.
    Hub(HubRepo),
}

impl ModelSource {
    /// Resolves `spec`: an existing path first, then a Hub id `org/name` or `org/name@revision`.
    pub fn resolve(spec: &str, opts: &HubOptions) -> Result<Self> {
        let path = Path::new(spec);
        if path.is_dir() {
            return Ok(ModelSource::Directory(path.to_path_buf()));
        }
        if path.is_file() {
            return if is_gguf(path) {
                Ok(ModelSource::GgufFile(path.to_path_buf()))
            } else {
                Err(Error::ModelNotFound {
                    spec: spec.into(),
                    reason: "a file was given but it is not a .gguf; pass a .gguf file or the \
                             folder that holds config.json / tokenizer.json"
                        .into(),
                })
            };
        }
        let (id, rev) = match spec.split_once('@') {
            Some((id, rev)) => (id, Some(rev.to_string())),
            None => (spec, None),
        };
        if rev
            .as_deref()
            .is_some_and(|r| r.is_empty() || r.contains('@'))
        {
            return Err(Error::ModelNotFound {
                spec: spec.into(),
                reason: "after `@` give one revision: a branch, tag or commit hash".into(),
            });
        }
        if !is_hub_id(id) {
            return Err(Error::ModelNotFound {
                spec: spec.into(),
                reason: "no such file or folder, and not a Hub id of the form `org/name`".into(),
            });
        }
        let revision = rev
            .or_else(|| opts.revision.clone())
            .unwrap_or(DEFAULT_REVISION.into());
        let repo = HubRepo {
            repo_id: id.to_string(),
            revision,
            opts: opts.clone(),
        };
        if opts.offline {
            repo.cached_snapshot("HF_HUB_OFFLINE is set")?;
        }
        Ok(ModelSource::Hub(repo))
    }

    /// A short name for messages.
    pub fn describe(&self) -> String {
        match self {
            ModelSource::Directory(p) | ModelSource::GgufFile(p) => p.display().to_string(),
            ModelSource::Hub(r) => format!("{}@{}", r.repo_id, r.revision),
        }
    }

    /// The path of `name` (a path relative to the model root) when the model has it.
    /// A single GGUF file has no side files: everything is in its metadata.
    pub fn optional_file(&self, name: &str) -> Result<Option<PathBuf>> {
        match self {
            ModelSource::Directory(dir) => {
                let p = dir.join(name);
                Ok(p.is_file().then_some(p))
            }
            ModelSource::GgufFile(_) => Ok(None),
            ModelSource::Hub(repo) => repo.file(name),
        }
    }

    /// Like `optional_file`, but a missing file is an error naming the model and the file.
    pub fn required_file(&self, name: &str) -> Result<PathBuf> {
        self.optional_file(name)?.ok_or_else(|| Error::MissingFile {
            model: self.describe(),
            file: name.into(),
            hint: match self {
                ModelSource::Hub(repo) => repo.missing_hint(name),
                ModelSource::GgufFile(_) => {
                    " (a single .gguf file has no side files; pass the model folder or Hub id)"
                        .into()
                }
                ModelSource::Directory(_) => String::new(),
            },
        })
    }

    /// Names of the files in the model's folder `dir` (empty when it has none).
    pub fn list_dir(&self, dir: &str) -> Result<Vec<String>> {
        let folder = match self {
            ModelSource::Directory(root) => root.join(dir),
            ModelSource::GgufFile(_) => return Ok(Vec::new()),
            ModelSource::Hub(repo) => return Ok(repo.list_dir(dir)),
        };
        let mut names: Vec<String> = match std::fs::read_dir(&folder) {
            Ok(entries) => entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        Ok(names)
    }

    /// The GGUF file this model is made of: the file itself, or the one `.gguf` in a folder
    /// that has no tokenizer.json. `gguf_file` picks one when there are several.
    pub fn gguf(&self, gguf_file: Option<&str>) -> Result<Option<PathBuf>> {
        match (self, gguf_file) {
            (ModelSource::GgufFile(p), _) => Ok(Some(p.clone())),
            (_, Some(name)) => self.required_file(name).map(Some),
            (ModelSource::Directory(dir), None) => {
                if dir.join("tokenizer.json").is_file() || dir.join("config.json").is_file() {
                    return Ok(None);
                }
                let mut ggufs: Vec<PathBuf> = std::fs::read_dir(dir)
                    .map_err(|e| Error::io(dir, e))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| is_gguf(p))
                    .collect();
                ggufs.sort();
                match ggufs.len() {
                    0 | 1 => Ok(ggufs.pop()),
                    _ => Err(Error::ModelNotFound {
                        spec: dir.display().to_string(),
                        reason: format!(
                            "the folder holds several GGUF files ({}); name one",
                            ggufs
                                .iter()
                                .filter_map(|p| p.file_name())
                                .map(|n| n.to_string_lossy())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    }),
                }
            }
            (ModelSource::Hub(_), None) => Ok(None),
        }
    }
}

fn is_gguf(p: &Path) -> bool {
    p.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// `org/name` with the characters the Hub allows in names.
fn is_hub_id(id: &str) -> bool {
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 96
            && !s.starts_with(['.', '-'])
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match id.split_once('/') {
        Some((org, name)) => ok(org) && ok(name),
        None => ok(id) && !id.contains(".."),
    }
}

fn is_commit_hash(rev: &str) -> bool {
    rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit())
}

/// A Hub repository and revision, with the options used to fetch it.
#[derive(Debug, Clone)]
pub struct HubRepo {
    pub repo_id: String,
    pub revision: String,
    opts: HubOptions,
}

impl HubRepo {
    /// Whether this repo is only read from the cache (HF_HUB_OFFLINE).
    pub fn is_offline(&self) -> bool {
        self.opts.offline
    }

    /// `<cache>/models--org--name`, as huggingface_hub names it.
    pub fn cache_folder(&self) -> PathBuf {
        self.opts
            .cache_dir
            .join(format!("models--{}", self.repo_id.replace('/', "--")))
    }

    /// The commit the revision names: itself when it is a commit hash, else `refs/<revision>`.
    fn cached_ref(&self) -> Option<String> {
        if is_commit_hash(&self.revision) {
            return Some(self.revision.to_ascii_lowercase());
        }
        let path = self.cache_folder().join("refs").join(&self.revision);
        let commit = std::fs::read_to_string(path).ok()?.trim().to_string();
        (!commit.is_empty()).then_some(commit)
    }

    /// The commit the revision points at in the cache, and its snapshot folder.
    fn cached_commit(&self) -> Option<(String, PathBuf)> {
        let commit = self.cached_ref()?;
        let snapshot = self.cache_folder().join("snapshots").join(&commit);
        snapshot.is_dir().then_some((commit, snapshot))
    }

    /// The cached snapshot, or the "not cached" error explaining where we looked.
    fn cached_snapshot(&self, why: &str) -> Result<(String, PathBuf)> {
        self.cached_commit().ok_or_else(|| {
            let folder = self.cache_folder();
            let mut searched = Vec::new();
            let commit = if is_commit_hash(&self.revision) {
                Some(self.revision.to_ascii_lowercase())
            } else {
                let refs = folder.join("refs").join(&self.revision);
                let commit = self.cached_ref();
                searched.push(match &commit {
                    Some(c) => format!("  {} (points at {c})", refs.display()),
                    None => format!("  {} (missing)", refs.display()),
                });
                commit
            };
            let snapshot = folder
                .join("snapshots")
                .join(commit.as_deref().unwrap_or("<commit>"));
            searched.push(format!("  {} (missing)", snapshot.display()));
            searched.push(format!(
                "  (the cache folder {} comes from HF_HUB_CACHE, else HF_HOME/hub, else \
                 ~/.cache/huggingface/hub)",
                self.opts.cache_dir.display()
            ));
            Error::NotCached {
                repo_id: self.repo_id.clone(),
                revision: self.revision.clone(),
                why: format!(" and {why}"),
                searched: searched.join("\n"),
            }
        })
    }

    /// `.no_exist/<commit>/<name>`: the marker huggingface_hub leaves for a file the Hub
    /// reported absent at that commit.
    fn no_exist_marker(&self, commit: &str, name: &str) -> PathBuf {
        self.cache_folder()
            .join(".no_exist")
            .join(commit)
            .join(name)
    }

    /// Looks `name` up in the cache: Some(Some(path)) cached, Some(None) known to be absent
    /// (a `.no_exist` marker), None unknown.
    fn cached_file(&self, name: &str) -> Option<Option<PathBuf>> {
        // The marker may exist before any snapshot does (the first file asked for was absent).
        let commit = self.cached_ref()?;
        let p = self
            .cache_folder()
            .join("snapshots")
            .join(&commit)
            .join(name);
        if p.is_file() {
            return Some(Some(p));
        }
        self.no_exist_marker(&commit, name).exists().then_some(None)
    }

    /// What to add to a "has no `name`" message.
    fn missing_hint(&self, name: &str) -> String {
        if self.opts.offline && self.cached_file(name).is_none() {
            " in the local cache (HF_HUB_OFFLINE is set and it was never downloaded: run once \
             with network access, or unset HF_HUB_OFFLINE)"
                .into()
        } else {
            String::new()
        }
    }

    /// The file `name` of this repo: from the cache, else downloaded (unless offline).
    pub fn file(&self, name: &str) -> Result<Option<PathBuf>> {
        if !is_repo_path(name) {
            return Err(Error::MissingFile {
                model: format!("{}@{}", self.repo_id, self.revision),
                file: name.into(),
                hint: " (not a relative path inside a repository)".into(),
            });
        }
        if let Some(found) = self.cached_file(name) {
            return Ok(found);
        }
        if self.opts.offline {
            // Offline, the snapshot exists (checked at resolve) but lacks this file: as
            // transformers does, treat it as absent and let the caller decide.
            self.cached_snapshot("HF_HUB_OFFLINE is set")?;
            return Ok(None);
        }
        self.download(name)
    }

    /// Records, as huggingface_hub does, that `name` does not exist at `commit`:
    /// `.no_exist/<commit>/<name>`, and `refs/<revision>` pointing at that commit.
    fn mark_absent(&self, commit: &str, name: &str) {
        let marker = self.no_exist_marker(commit, name);
        let written = marker
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&marker)
            })
            .and_then(|_| self.write_ref(commit));
        if let Err(e) = written {
            tracing::debug!("could not record {} as absent: {e}", marker.display());
        }
    }

    /// Points `refs/<revision>` at `commit` (not for a revision that is itself a commit).
    fn write_ref(&self, commit: &str) -> std::io::Result<()> {
        if self.revision.eq_ignore_ascii_case(commit) {
            return Ok(());
        }
        let refs = self.cache_folder().join("refs").join(&self.revision);
        if std::fs::read_to_string(&refs).is_ok_and(|c| c.trim() == commit) {
            return Ok(());
        }
        if let Some(dir) = refs.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&refs, commit)
    }

    /// Files under `dir` in this repo: the cached snapshot's when offline, else the Hub's
    /// listing (an unreachable Hub lists nothing; the files themselves report errors).
    fn list_dir(&self, dir: &str) -> Vec<String> {
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let mut names: Vec<String> = if self.opts.offline {
            self.cached_commit()
                .and_then(|(_, snapshot)| std::fs::read_dir(snapshot.join(dir)).ok())
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok()?.file_name().into_string().ok())
                        .collect()
                })
                .unwrap_or_default()
        } else {
            let api = ApiBuilder::from_cache(Cache::new(self.opts.cache_dir.clone()))
                .with_endpoint(self.opts.endpoint.clone())
                .with_token(self.opts.token.clone())
                .with_progress(false)
                .build();
            let repo =
                Repo::with_revision(self.repo_id.clone(), RepoType::Model, self.revision.clone());
            api.ok()
                .and_then(|api| api.repo(repo).info().ok())
                .map(|info| {
                    info.siblings
                        .into_iter()
                        .filter_map(|s| s.rfilename.strip_prefix(&prefix).map(str::to_string))
                        .filter(|n| !n.contains('/'))
                        .collect()
                })
                .unwrap_or_default()
        };
        names.sort();
        names
    }

    fn download(&self, name: &str) -> Result<Option<PathBuf>> {
        let fail = |msg: String| Error::Download {
            repo_id: self.repo_id.clone(),
            file: name.to_string(),
            endpoint: self.opts.endpoint.clone(),
            msg,
        };
        // `from_cache`, not `new`: `new` looks for the home folder (and panics without one).
        let api = ApiBuilder::from_cache(Cache::new(self.opts.cache_dir.clone()))
            .with_endpoint(self.opts.endpoint.clone())
            .with_token(self.opts.token.clone())
            .with_progress(self.opts.progress)
            .with_retries(2)
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let repo =
            Repo::with_revision(self.repo_id.clone(), RepoType::Model, self.revision.clone());
        let err = match api.repo(repo).download(name) {
            Ok(path) => return Ok(Some(path)),
            Err(ApiError::RequestError(e)) => *e,
            Err(ApiError::TooManyRetries(e)) => match *e {
                ApiError::RequestError(e) => *e,
                e => return Err(fail(format!("too many retries: {e}"))),
            },
            Err(e) => return Err(fail(e.to_string())),
        };
        match err {
            ureq::Error::Status(code, response) => {
                let header = |h: &str| response.header(h).map(str::to_string);
                let error_code = header("x-error-code").unwrap_or_default();
                let detail = match (error_code.as_str(), header("x-error-message")) {
                    ("", None) => String::new(),
                    (c, None) => format!(" ({c})"),
                    ("", Some(m)) => format!(" ({m})"),
                    (c, Some(m)) => format!(" ({c}: {m})"),
                };
                let token_hint = if self.opts.token.is_some() {
                    "check that the token (HF_TOKEN, else HF_HOME/token) has access to it"
                } else {
                    "set HF_TOKEN to a token that has access to it"
                };
                match (code, error_code.as_str()) {
                    (_, "RepoNotFound") => Err(fail(format!(
                        "HTTP {code}{detail}: no such repository; check the id, or if it is \
                         private or gated, {token_hint}"
                    ))),
                    (_, "RevisionNotFound") => Err(fail(format!(
                        "HTTP {code}{detail}: the repository has no revision `{}`",
                        self.revision
                    ))),
                    (404, _) => {
                        // The file does not exist at this revision: remember it, so that
                        // later (and offline) lookups need not ask again.
                        if let Some(commit) = header("x-repo-commit").filter(|c| is_commit_hash(c))
                        {
                            self.mark_absent(&commit.to_ascii_lowercase(), name);
                        }
                        Ok(None)
                    }
                    (401 | 403, _) => Err(fail(format!(
                        "HTTP {code}{detail}: the repo may be gated or private; {token_hint}"
                    ))),
                    _ => Err(fail(format!("HTTP {code}{detail}"))),
                }
            }
            transport @ ureq::Error::Transport(_) => {
                let not_cached = self.cached_snapshot("the Hub could not be reached").err();
                Err(fail(match not_cached {
                    Some(nc) => format!("{transport}\n{nc}"),
                    None => format!(
                        "{transport}\n(check the network and HF_ENDPOINT; set HF_HUB_OFFLINE=1 \
                         to use only the local cache)"
                    ),
                }))
            }
        }
    }
}

/// A file path inside a repo: relative, no `..`, no empty or `.` parts.
fn is_repo_path(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name.contains('\\')
        && name
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}
