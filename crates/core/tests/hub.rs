//! Model resolution: local paths, the Hugging Face cache layout read offline, and downloads
//! from a Hub stand-in served on 127.0.0.1 by the test itself. Nothing here reads or writes
//! the real ~/.cache or reaches the network: every `HubOptions` is built from an explicit
//! variable map pointing into a temporary folder.

// clippy.toml allows unwrap/expect in #[test] functions; the helpers below are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferro_core::{Error, HubOptions, ModelSource};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const OTHER_COMMIT: &str = "fedcba9876543210fedcba9876543210fedcba98";
const REPO: &str = "acme/tiny-model";

/// Options from a variable map, as `from_env` would build them from that environment.
fn opts_from(vars: &[(&str, &str)]) -> HubOptions {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    HubOptions::from_vars(|k| map.get(k).cloned())
}

/// Offline options reading the cache folder `cache`.
fn offline(cache: &Path) -> HubOptions {
    let home = cache.join("hf-home");
    let mut o = opts_from(&[
        ("HF_HUB_CACHE", cache.to_str().unwrap()),
        ("HF_HOME", home.to_str().unwrap()),
        ("HF_HUB_OFFLINE", "1"),
    ]);
    o.progress = false;
    o
}

fn write(path: &Path, content: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// Lays out `models--acme--tiny-model` as huggingface_hub leaves it: refs/main and
/// refs/v1.0 pointing at COMMIT, a snapshot with tokenizer.json and 1_Pooling/config.json,
/// and a `.no_exist` marker for tokenizer_config.json.
fn cached_repo(cache: &Path) -> PathBuf {
    let repo = cache.join("models--acme--tiny-model");
    write(&repo.join("refs/main"), COMMIT.as_bytes());
    write(&repo.join("refs/v1.0"), format!("{COMMIT}\n").as_bytes());
    let snap = repo.join("snapshots").join(COMMIT);
    write(&snap.join("tokenizer.json"), b"{\"model\":{}}");
    write(
        &snap.join("1_Pooling/config.json"),
        b"{\"pooling_mode_mean_tokens\":true}",
    );
    write(
        &repo
            .join(".no_exist")
            .join(COMMIT)
            .join("tokenizer_config.json"),
        b"",
    );
    repo
}

fn hub_repo(source: &ModelSource) -> &ferro_core::HubRepo {
    match source {
        ModelSource::Hub(r) => r,
        other => panic!("expected a Hub source, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Offline: the cache layout
// ---------------------------------------------------------------------------------------

#[test]
fn offline_cached_files_resolve_from_the_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = cached_repo(tmp.path());
    let snap = repo.join("snapshots").join(COMMIT);
    let source = ModelSource::resolve(REPO, &offline(tmp.path())).unwrap();
    let hub = hub_repo(&source);
    assert_eq!(hub.repo_id, REPO);
    assert_eq!(hub.revision, "main");
    assert_eq!(hub.cache_folder(), repo);
    assert_eq!(source.describe(), "acme/tiny-model@main");

    assert_eq!(
        source.optional_file("tokenizer.json").unwrap(),
        Some(snap.join("tokenizer.json"))
    );
    assert_eq!(
        source.required_file("tokenizer.json").unwrap(),
        snap.join("tokenizer.json")
    );
    assert_eq!(
        source.optional_file("1_Pooling/config.json").unwrap(),
        Some(snap.join("1_Pooling/config.json"))
    );
    // Known absent (.no_exist) and simply not cached: both None offline.
    assert_eq!(source.optional_file("tokenizer_config.json").unwrap(), None);
    assert_eq!(source.optional_file("model.safetensors").unwrap(), None);
    assert_eq!(source.gguf(None).unwrap(), None);
}

#[test]
fn offline_required_file_missing_is_a_missing_file_error() {
    let tmp = tempfile::tempdir().unwrap();
    cached_repo(tmp.path());
    let source = ModelSource::resolve(REPO, &offline(tmp.path())).unwrap();

    let err = source.required_file("tokenizer_config.json").unwrap_err();
    assert!(
        matches!(&err, Error::MissingFile { model, file, .. }
        if model == "acme/tiny-model@main" && file == "tokenizer_config.json"),
        "{err:?}"
    );

    // Never downloaded (no marker): the message says why and what to do.
    let err = source.required_file("model.safetensors").unwrap_err();
    assert!(matches!(&err, Error::MissingFile { file, .. } if file == "model.safetensors"));
    let msg = err.to_string();
    assert!(msg.contains("acme/tiny-model@main"), "{msg}");
    assert!(msg.contains("HF_HUB_OFFLINE"), "{msg}");
    assert!(msg.contains("network"), "{msg}");

    // A file name escaping the repo is refused, not looked up.
    let err = source.optional_file("../../refs/main").unwrap_err();
    assert!(matches!(err, Error::MissingFile { .. }), "{err:?}");
}

#[test]
fn offline_revision_from_the_id_suffix_or_the_options() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = cached_repo(tmp.path());
    let want = repo.join("snapshots").join(COMMIT).join("tokenizer.json");

    let by_suffix = ModelSource::resolve("acme/tiny-model@v1.0", &offline(tmp.path())).unwrap();
    assert_eq!(hub_repo(&by_suffix).repo_id, REPO);
    assert_eq!(hub_repo(&by_suffix).revision, "v1.0");
    assert_eq!(by_suffix.describe(), "acme/tiny-model@v1.0");
    assert_eq!(
        by_suffix.optional_file("tokenizer.json").unwrap(),
        Some(want.clone())
    );
    // The .no_exist marker is per commit, so it holds for every name of that commit.
    assert_eq!(
        by_suffix.optional_file("tokenizer_config.json").unwrap(),
        None
    );

    let mut opts = offline(tmp.path());
    opts.revision = Some("v1.0".into());
    let by_option = ModelSource::resolve(REPO, &opts).unwrap();
    assert_eq!(hub_repo(&by_option).revision, "v1.0");
    assert_eq!(
        by_option.optional_file("tokenizer.json").unwrap(),
        Some(want.clone())
    );

    // The id's suffix wins over the options.
    opts.revision = Some("no-such-branch".into());
    let both = ModelSource::resolve("acme/tiny-model@v1.0", &opts).unwrap();
    assert_eq!(hub_repo(&both).revision, "v1.0");

    // A commit hash needs no ref file.
    let by_commit =
        ModelSource::resolve(&format!("{REPO}@{COMMIT}"), &offline(tmp.path())).unwrap();
    assert_eq!(hub_repo(&by_commit).revision, COMMIT);
    assert_eq!(
        by_commit.optional_file("tokenizer.json").unwrap(),
        Some(want)
    );
    assert_eq!(
        by_commit.optional_file("tokenizer_config.json").unwrap(),
        None
    );

    // A revision that is not cached: NotCached naming it.
    let err = ModelSource::resolve(&format!("{REPO}@v2.0"), &offline(tmp.path())).unwrap_err();
    assert!(
        matches!(&err, Error::NotCached { revision, .. } if revision == "v2.0"),
        "{err:?}"
    );
    let err =
        ModelSource::resolve(&format!("{REPO}@{OTHER_COMMIT}"), &offline(tmp.path())).unwrap_err();
    assert!(err.to_string().contains(OTHER_COMMIT), "{err}");

    // An empty revision is a mistake in the spec.
    let err = ModelSource::resolve("acme/tiny-model@", &offline(tmp.path())).unwrap_err();
    assert!(matches!(err, Error::ModelNotFound { .. }), "{err:?}");
}

#[test]
fn offline_and_not_cached_explains_where_it_looked_and_how_to_get_it() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub-cache");
    let err = ModelSource::resolve("acme/absent-model", &offline(&cache)).unwrap_err();
    let Error::NotCached {
        repo_id,
        revision,
        searched,
        ..
    } = &err
    else {
        panic!("expected NotCached, got {err:?}");
    };
    assert_eq!(repo_id, "acme/absent-model");
    assert_eq!(revision, "main");
    let folder = cache.join("models--acme--absent-model");
    assert!(searched.contains(&folder.join("refs").join("main").display().to_string()));
    assert!(searched.contains(&folder.join("snapshots").display().to_string()));

    let msg = err.to_string();
    assert!(msg.contains("acme/absent-model"), "{msg}");
    assert!(msg.contains("`main`"), "{msg}");
    assert!(msg.contains("HF_HUB_OFFLINE"), "{msg}");
    assert!(msg.contains(&folder.display().to_string()), "{msg}");
    assert!(msg.contains("network access"), "{msg}");
    assert!(msg.contains("hf download"), "{msg}");

    // A ref whose snapshot is gone: the message says which commit it expected.
    let folder = cache.join("models--acme--half-model");
    write(&folder.join("refs/main"), COMMIT.as_bytes());
    let err = ModelSource::resolve("acme/half-model", &offline(&cache)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::NotCached { .. }));
    assert!(
        msg.contains(&folder.join("snapshots").join(COMMIT).display().to_string()),
        "{msg}"
    );
}

#[test]
fn from_vars_precedence() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("hf-home");
    write(&home.join("token"), b"hf_from_file\n");
    let home_s = home.to_str().unwrap();

    // HF_HOME alone: cache is HF_HOME/hub, token from HF_HOME/token, online, default endpoint.
    let o = opts_from(&[("HF_HOME", home_s)]);
    assert_eq!(o.cache_dir, home.join("hub"));
    assert_eq!(o.token.as_deref(), Some("hf_from_file"));
    assert!(!o.offline);
    assert_eq!(o.endpoint, "https://huggingface.co");
    assert_eq!(o.revision, None);

    // HF_HUB_CACHE over HF_HOME/hub; HF_TOKEN over the token file; HF_ENDPOINT.
    let o = opts_from(&[
        ("HF_HOME", home_s),
        ("HF_HUB_CACHE", "/somewhere/else"),
        ("HF_TOKEN", "hf_from_env"),
        ("HF_ENDPOINT", "http://127.0.0.1:9/"),
    ]);
    assert_eq!(o.cache_dir, PathBuf::from("/somewhere/else"));
    assert_eq!(o.token.as_deref(), Some("hf_from_env"));
    assert_eq!(o.endpoint, "http://127.0.0.1:9");

    // Empty values count as unset.
    let o = opts_from(&[("HF_HOME", home_s), ("HF_HUB_CACHE", ""), ("HF_TOKEN", "")]);
    assert_eq!(o.cache_dir, home.join("hub"));
    assert_eq!(o.token.as_deref(), Some("hf_from_file"));

    // Without HF_HOME: XDG_CACHE_HOME, then HOME/.cache; no token file there.
    let o = opts_from(&[("HOME", tmp.path().to_str().unwrap())]);
    assert_eq!(o.cache_dir, tmp.path().join(".cache/huggingface/hub"));
    assert_eq!(o.token, None);
    let o = opts_from(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/xdg")]);
    assert_eq!(o.cache_dir, PathBuf::from("/xdg/huggingface/hub"));
    let o = opts_from(&[("HOME", "/h"), ("HF_HOME", "~/hf")]);
    assert_eq!(o.cache_dir, PathBuf::from("/h/hf/hub"));

    // HF_HUB_OFFLINE: 1 / true / ON / yes, any case; other values are online.
    for v in ["1", "true", "TRUE", "ON", "on", "yes"] {
        assert!(
            opts_from(&[("HOME", "/h"), ("HF_HUB_OFFLINE", v)]).offline,
            "{v}"
        );
    }
    for v in ["0", "false", "off", ""] {
        assert!(
            !opts_from(&[("HOME", "/h"), ("HF_HUB_OFFLINE", v)]).offline,
            "{v}"
        );
    }
    assert!(opts_from(&[("HOME", "/h"), ("TRANSFORMERS_OFFLINE", "1")]).offline);
}

// ---------------------------------------------------------------------------------------
// Local paths
// ---------------------------------------------------------------------------------------

#[test]
fn local_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    write(&dir.join("config.json"), b"{}");
    write(&dir.join("1_Pooling/config.json"), b"{}");
    let source = ModelSource::resolve(dir.to_str().unwrap(), &offline(tmp.path())).unwrap();
    assert!(
        matches!(&source, ModelSource::Directory(p) if p == &dir),
        "{source:?}"
    );
    assert_eq!(source.describe(), dir.display().to_string());
    assert_eq!(
        source.optional_file("config.json").unwrap(),
        Some(dir.join("config.json"))
    );
    assert_eq!(
        source.required_file("1_Pooling/config.json").unwrap(),
        dir.join("1_Pooling/config.json")
    );
    assert_eq!(source.optional_file("tokenizer.json").unwrap(), None);
    let err = source.required_file("tokenizer.json").unwrap_err();
    assert!(matches!(&err, Error::MissingFile { file, .. } if file == "tokenizer.json"));
    assert!(
        err.to_string().contains(&dir.display().to_string()),
        "{err}"
    );
    // A folder with config.json is a Hugging Face folder, not a GGUF one.
    assert_eq!(source.gguf(None).unwrap(), None);
}

#[test]
fn local_gguf_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("tiny.Q8_0.gguf");
    write(&file, b"GGUF");
    let source = ModelSource::resolve(file.to_str().unwrap(), &offline(tmp.path())).unwrap();
    assert!(
        matches!(&source, ModelSource::GgufFile(p) if p == &file),
        "{source:?}"
    );
    assert_eq!(source.gguf(None).unwrap(), Some(file.clone()));
    assert_eq!(source.gguf(Some("other.gguf")).unwrap(), Some(file.clone()));
    assert_eq!(source.optional_file("tokenizer.json").unwrap(), None);
    let err = source.required_file("tokenizer.json").unwrap_err();
    assert!(matches!(err, Error::MissingFile { .. }), "{err:?}");

    // The extension is matched without regard to case.
    let upper = tmp.path().join("TINY.GGUF");
    write(&upper, b"GGUF");
    let source = ModelSource::resolve(upper.to_str().unwrap(), &offline(tmp.path())).unwrap();
    assert!(matches!(source, ModelSource::GgufFile(_)));
}

#[test]
fn local_file_that_is_not_gguf_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("model.safetensors");
    write(&file, b"xx");
    let spec = file.to_str().unwrap();
    let err = ModelSource::resolve(spec, &offline(tmp.path())).unwrap_err();
    assert!(
        matches!(&err, Error::ModelNotFound { spec: s, .. } if s == spec),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(spec) && msg.contains(".gguf"), "{msg}");
}

#[test]
fn nonexistent_path_that_is_not_a_hub_id_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = offline(tmp.path());
    let missing = tmp.path().join("no/such/model");
    for spec in [
        missing.to_str().unwrap(),
        "./nope",
        "a/b/c",
        "",
        "org/",
        "../x",
    ] {
        let err = ModelSource::resolve(spec, &opts).unwrap_err();
        assert!(
            matches!(&err, Error::ModelNotFound { spec: s, .. } if s == spec),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&format!("`{spec}`")), "{msg}");
        assert!(msg.contains("Hub id"), "{msg}");
    }
}

#[test]
fn folder_with_gguf_files() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = offline(tmp.path());

    let one = tmp.path().join("one");
    write(&one.join("model-Q4_K_M.gguf"), b"GGUF");
    write(&one.join("README.md"), b"hi");
    let source = ModelSource::resolve(one.to_str().unwrap(), &opts).unwrap();
    assert_eq!(
        source.gguf(None).unwrap(),
        Some(one.join("model-Q4_K_M.gguf"))
    );

    let two = tmp.path().join("two");
    write(&two.join("model-Q4_K_M.gguf"), b"GGUF");
    write(&two.join("model-Q8_0.gguf"), b"GGUF");
    let source = ModelSource::resolve(two.to_str().unwrap(), &opts).unwrap();
    let err = source.gguf(None).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::ModelNotFound { .. }));
    assert!(
        msg.contains("model-Q4_K_M.gguf") && msg.contains("model-Q8_0.gguf"),
        "{msg}"
    );
    // Naming one picks it; naming a missing one is a MissingFile.
    assert_eq!(
        source.gguf(Some("model-Q8_0.gguf")).unwrap(),
        Some(two.join("model-Q8_0.gguf"))
    );
    let err = source.gguf(Some("model-F16.gguf")).unwrap_err();
    assert!(matches!(&err, Error::MissingFile { file, .. } if file == "model-F16.gguf"));

    let none = tmp.path().join("none");
    write(&none.join("README.md"), b"hi");
    let source = ModelSource::resolve(none.to_str().unwrap(), &opts).unwrap();
    assert_eq!(source.gguf(None).unwrap(), None);
}

// ---------------------------------------------------------------------------------------
// Downloads from a Hub stand-in on 127.0.0.1
// ---------------------------------------------------------------------------------------

/// One request the stand-in received.
#[derive(Debug, Clone)]
struct Request {
    path: String,
    range: Option<String>,
    authorization: Option<String>,
}

/// What the stand-in serves: one repo, its revisions (branch or tag -> commit) and files.
struct HubState {
    repo: String,
    commit: String,
    revisions: Vec<String>,
    files: HashMap<String, Vec<u8>>,
    /// Answer every request with this status (401 to test auth failures).
    force_status: Option<u16>,
    requests: Vec<Request>,
}

/// A tiny HTTP/1.1 server answering the Hub's `GET /{org}/{name}/resolve/{rev}/{file}`
/// route, one connection at a time, each closed after its response. Dropping it stops it.
struct FakeHub {
    url: String,
    state: Arc<Mutex<HubState>>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl FakeHub {
    fn start(files: &[(&str, Vec<u8>)], force_status: Option<u16>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(HubState {
            repo: REPO.into(),
            commit: COMMIT.into(),
            revisions: vec!["main".into(), "v1.0".into()],
            files: files
                .iter()
                .map(|(n, c)| (n.to_string(), c.clone()))
                .collect(),
            force_status,
            requests: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(conn) = conn {
                        // A broken request only ends that connection.
                        let _ = serve(conn, &state);
                    }
                }
            })
        };
        FakeHub {
            url: format!("http://{addr}"),
            state,
            stop,
            addr,
            thread: Some(thread),
        }
    }

    fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, state: &Mutex<HubState>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let range = headers.get("range").cloned();
    let mut st = state.lock().unwrap();
    st.requests.push(Request {
        path: target.clone(),
        range: range.clone(),
        authorization: headers.get("authorization").cloned(),
    });

    let commit = st.commit.clone();
    let reply = |status: u16, extra: &[(&str, String)], body: &[u8]| {
        let reason = match status {
            200 => "OK",
            206 => "Partial Content",
            401 => "Unauthorized",
            404 => "Not Found",
            416 => "Range Not Satisfiable",
            _ => "Error",
        };
        let mut head = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (k, v) in extra {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut out = conn.try_clone()?;
        out.write_all(head.as_bytes())?;
        out.write_all(body)?;
        out.flush()
    };

    if let Some(status) = st.force_status {
        return reply(status, &[], b"forced");
    }
    let prefix = format!("/{}/resolve/", st.repo);
    let Some((rev, file)) = target
        .strip_prefix(&prefix)
        .filter(|_| method == "GET")
        .and_then(|r| r.split_once('/'))
    else {
        return reply(
            404,
            &[("X-Error-Code", "RepoNotFound".into())],
            b"no such repo",
        );
    };
    let rev = rev.replace("%2F", "/");
    if rev != commit && !st.revisions.contains(&rev) {
        return reply(
            404,
            &[("X-Error-Code", "RevisionNotFound".into())],
            b"no such revision",
        );
    }
    let Some(content) = st.files.get(file) else {
        let extra = [
            ("X-Repo-Commit", commit),
            ("X-Error-Code", "EntryNotFound".into()),
        ];
        return reply(404, &extra, b"Entry not found");
    };
    let total = content.len();
    let etag = format!("{:016x}", fnv1a(content));
    let mut extra = vec![("ETag", format!("\"{etag}\"")), ("X-Repo-Commit", commit)];
    if file.ends_with(".bin") {
        // Large (LFS) files: the Hub names the blob by X-Linked-Etag.
        extra.push(("X-Linked-Etag", format!("\"lfs{etag}\"")));
    }
    let Some(spec) = range.as_deref().and_then(|r| r.strip_prefix("bytes=")) else {
        return reply(200, &extra, content);
    };
    let (a, b) = spec.split_once('-').unwrap_or((spec, ""));
    let start: usize = a.parse().unwrap_or(usize::MAX);
    let end: usize = if b.is_empty() {
        total - 1
    } else {
        b.parse().unwrap_or(0)
    }
    .min(total - 1);
    if start > end {
        extra.push(("Content-Range", format!("bytes */{total}")));
        return reply(416, &extra, b"");
    }
    extra.push(("Content-Range", format!("bytes {start}-{end}/{total}")));
    reply(206, &extra, &content[start..=end])
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

/// ureq (inside hf-hub) sends every request through HTTP(S)_PROXY / ALL_PROXY when set,
/// 127.0.0.1 included: the download tests cannot run behind one.
fn proxy_in_env() -> bool {
    let set = [
        "ALL_PROXY",
        "all_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
    ]
    .iter()
    .any(|k| std::env::var(k).is_ok_and(|v| !v.is_empty()));
    // Under CI a skipped test would hide a broken download path: fail instead.
    // scripts/test.sh clears these variables for the test run.
    assert!(
        !(set && std::env::var_os("CI").is_some()),
        "a proxy variable is set under CI; run the tests through scripts/test.sh, which clears them"
    );
    if set {
        eprintln!("skipped: a proxy is set in the environment and ureq would use it for 127.0.0.1");
    }
    set
}

fn online(cache: &Path, endpoint: &str, token: Option<&str>) -> HubOptions {
    let mut vars = vec![
        ("HF_HUB_CACHE", cache.to_str().unwrap()),
        ("HF_ENDPOINT", endpoint),
    ];
    // HF_HOME in the temp folder too, so no token file is read from the real home.
    let home = cache.join("home");
    vars.push(("HF_HOME", home.to_str().unwrap()));
    if let Some(t) = token {
        vars.push(("HF_TOKEN", t));
    }
    let mut o = opts_from(&vars);
    o.progress = false;
    assert!(!o.offline);
    o
}

fn binary_blob() -> Vec<u8> {
    (0..50_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

#[test]
fn download_into_the_standard_cache_layout() {
    if proxy_in_env() {
        return;
    }
    let config = br#"{"model_type":"bert","hidden_size":8}"#.to_vec();
    let weights = binary_blob();
    let pooling = br#"{"pooling_mode_cls_token":true}"#.to_vec();
    let hub = FakeHub::start(
        &[
            ("config.json", config.clone()),
            ("model.bin", weights.clone()),
            ("1_Pooling/config.json", pooling.clone()),
        ],
        None,
    );
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let opts = online(&cache, &hub.url, Some("hf_secret"));
    let source = ModelSource::resolve(REPO, &opts).unwrap();
    let folder = cache.join("models--acme--tiny-model");
    let snap = folder.join("snapshots").join(COMMIT);

    let got = source.required_file("config.json").unwrap();
    assert_eq!(got, snap.join("config.json"));
    assert_eq!(std::fs::read(&got).unwrap(), config);
    assert_eq!(
        std::fs::read_to_string(folder.join("refs/main"))
            .unwrap()
            .trim(),
        COMMIT
    );

    let got = source.optional_file("model.bin").unwrap().unwrap();
    assert_eq!(got, snap.join("model.bin"));
    assert_eq!(
        std::fs::read(&got).unwrap(),
        weights,
        "the binary file is byte-exact"
    );
    let blob = folder
        .join("blobs")
        .join(format!("lfs{:016x}", fnv1a(&weights)));
    assert_eq!(
        std::fs::read(&blob).unwrap(),
        weights,
        "LFS blobs are named by X-Linked-Etag"
    );
    let blob = folder
        .join("blobs")
        .join(format!("{:016x}", fnv1a(&config)));
    assert_eq!(std::fs::read(&blob).unwrap(), config);

    let got = source
        .optional_file("1_Pooling/config.json")
        .unwrap()
        .unwrap();
    assert_eq!(got, snap.join("1_Pooling/config.json"));
    assert_eq!(std::fs::read(&got).unwrap(), pooling);

    let requests = hub.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert_eq!(
            r.authorization.as_deref(),
            Some("Bearer hf_secret"),
            "{r:?}"
        );
        assert!(
            r.path.starts_with("/acme/tiny-model/resolve/main/"),
            "{r:?}"
        );
    }
    assert!(requests
        .iter()
        .any(|r| r.range.as_deref() == Some("bytes=0-0")));
    assert!(requests
        .iter()
        .any(|r| r.path.ends_with("/1_Pooling/config.json")));

    // Absent on the Hub: None, and a .no_exist marker for the commit the Hub reported.
    assert_eq!(source.optional_file("tokenizer.json").unwrap(), None);
    assert!(folder
        .join(".no_exist")
        .join(COMMIT)
        .join("tokenizer.json")
        .is_file());
    assert_eq!(source.optional_file("sub/absent.json").unwrap(), None);
    assert!(folder
        .join(".no_exist")
        .join(COMMIT)
        .join("sub/absent.json")
        .is_file());

    // Everything again: served from the cache, no new request.
    let before = hub.requests().len();
    assert_eq!(
        source.required_file("config.json").unwrap(),
        snap.join("config.json")
    );
    assert_eq!(
        source.optional_file("model.bin").unwrap(),
        Some(snap.join("model.bin"))
    );
    assert_eq!(source.optional_file("tokenizer.json").unwrap(), None);
    assert_eq!(source.optional_file("sub/absent.json").unwrap(), None);
    assert_eq!(
        hub.requests().len(),
        before,
        "{:?}",
        &hub.requests()[before..]
    );

    // And offline now finds the same files (and knows the absent one is absent).
    drop(hub);
    let mut off = opts.clone();
    off.offline = true;
    let source = ModelSource::resolve(REPO, &off).unwrap();
    assert_eq!(
        source.required_file("config.json").unwrap(),
        snap.join("config.json")
    );
    assert_eq!(
        source.optional_file("model.bin").unwrap(),
        Some(snap.join("model.bin"))
    );
    assert_eq!(
        source.optional_file("1_Pooling/config.json").unwrap(),
        Some(snap.join("1_Pooling/config.json"))
    );
    assert_eq!(source.optional_file("tokenizer.json").unwrap(), None);
    let err = source.required_file("tokenizer.json").unwrap_err();
    assert!(matches!(err, Error::MissingFile { .. }), "{err:?}");
}

#[test]
fn download_an_absent_file_first_records_it_for_offline_use() {
    if proxy_in_env() {
        return;
    }
    let hub = FakeHub::start(&[("config.json", b"{}".to_vec())], None);
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let opts = online(&cache, &hub.url, None);
    let source = ModelSource::resolve(REPO, &opts).unwrap();
    // The first thing asked for is absent: marker and ref are written, no snapshot yet.
    assert_eq!(source.optional_file("tokenizer.json").unwrap(), None);
    let folder = cache.join("models--acme--tiny-model");
    assert!(folder
        .join(".no_exist")
        .join(COMMIT)
        .join("tokenizer.json")
        .is_file());
    assert_eq!(
        std::fs::read_to_string(folder.join("refs/main"))
            .unwrap()
            .trim(),
        COMMIT
    );
    let n = hub.requests().len();
    assert_eq!(source.optional_file("tokenizer.json").unwrap(), None);
    assert_eq!(
        hub.requests().len(),
        n,
        "the marker is used before any snapshot exists"
    );
    assert!(
        hub.requests().iter().all(|r| r.authorization.is_none()),
        "no token, no header"
    );
}

#[test]
fn download_by_tag_and_by_commit_then_offline() {
    if proxy_in_env() {
        return;
    }
    let hub = FakeHub::start(&[("config.json", b"{\"a\":1}".to_vec())], None);
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let opts = online(&cache, &hub.url, None);
    let folder = cache.join("models--acme--tiny-model");
    let want = folder.join("snapshots").join(COMMIT).join("config.json");

    let tag = ModelSource::resolve(&format!("{REPO}@v1.0"), &opts).unwrap();
    assert_eq!(tag.required_file("config.json").unwrap(), want);
    assert_eq!(
        std::fs::read_to_string(folder.join("refs/v1.0"))
            .unwrap()
            .trim(),
        COMMIT
    );
    assert!(hub
        .requests()
        .iter()
        .all(|r| r.path.starts_with("/acme/tiny-model/resolve/v1.0/")));

    let mut by_commit = opts.clone();
    by_commit.revision = Some(COMMIT.into());
    let pinned = ModelSource::resolve(REPO, &by_commit).unwrap();
    assert_eq!(pinned.required_file("config.json").unwrap(), want);
    assert_eq!(pinned.optional_file("absent.json").unwrap(), None);
    assert!(folder
        .join(".no_exist")
        .join(COMMIT)
        .join("absent.json")
        .is_file());

    // A revision the Hub does not know is an error naming it, not "file absent".
    let err = ModelSource::resolve(&format!("{REPO}@nope"), &opts)
        .unwrap()
        .optional_file("config.json")
        .unwrap_err();
    assert!(matches!(err, Error::Download { .. }), "{err:?}");
    assert!(err.to_string().contains("`nope`"), "{err}");

    drop(hub);
    for spec in [format!("{REPO}@v1.0"), format!("{REPO}@{COMMIT}")] {
        let mut off = opts.clone();
        off.offline = true;
        let source = ModelSource::resolve(&spec, &off).unwrap();
        assert_eq!(source.required_file("config.json").unwrap(), want, "{spec}");
        assert_eq!(source.optional_file("absent.json").unwrap(), None, "{spec}");
    }
}

#[test]
fn download_unauthorized_mentions_hf_token() {
    if proxy_in_env() {
        return;
    }
    let hub = FakeHub::start(&[("config.json", b"{}".to_vec())], Some(401));
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    for token in [None, Some("hf_bad")] {
        let source = ModelSource::resolve(REPO, &online(&cache, &hub.url, token)).unwrap();
        let err = source.required_file("config.json").unwrap_err();
        assert!(
            matches!(&err, Error::Download { repo_id, file, .. }
                if repo_id == REPO && file == "config.json"),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("401"), "{msg}");
        assert!(msg.contains("HF_TOKEN"), "{msg}");
        assert!(msg.contains(&hub.url), "{msg}");
    }
    assert!(!cache.join("models--acme--tiny-model/.no_exist").exists());
}

#[test]
fn download_with_the_hub_unreachable_fails_fast() {
    if proxy_in_env() {
        return;
    }
    // A port that was bound and released: connecting is refused at once.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{addr}");
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let source = ModelSource::resolve(REPO, &online(&cache, &url, None)).unwrap();
    let start = Instant::now();
    let err = source.optional_file("config.json").unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "took {:?}",
        start.elapsed()
    );
    assert!(matches!(err, Error::Download { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&url), "{msg}");
    // Nothing cached either: the message says where it looked and how to get the files.
    assert!(msg.contains("could not be reached"), "{msg}");
    assert!(msg.contains("models--acme--tiny-model"), "{msg}");
}

#[test]
fn fake_hub_honours_ranges() {
    // The stand-in itself, spoken to directly: the download tests rely on it.
    let hub = FakeHub::start(&[("f.txt", b"0123456789".to_vec())], None);
    let get = |range: Option<&str>| {
        let mut s = TcpStream::connect(hub.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let range = range.map(|r| format!("Range: {r}\r\n")).unwrap_or_default();
        write!(
            s,
            "GET /acme/tiny-model/resolve/main/f.txt HTTP/1.1\r\nHost: x\r\n{range}\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let r = get(Some("bytes=0-0"));
    assert!(
        r.starts_with("HTTP/1.1 206") && r.contains("Content-Range: bytes 0-0/10"),
        "{r}"
    );
    assert!(r.ends_with("\r\n\r\n0"), "{r}");
    let r = get(Some("bytes=3-"));
    assert!(
        r.contains("Content-Range: bytes 3-9/10") && r.ends_with("3456789"),
        "{r}"
    );
    let r = get(Some("bytes=2-4"));
    assert!(r.ends_with("\r\n\r\n234"), "{r}");
    let r = get(None);
    assert!(
        r.starts_with("HTTP/1.1 200") && r.ends_with("0123456789"),
        "{r}"
    );
    assert!(r.contains(&format!("X-Repo-Commit: {COMMIT}")), "{r}");
}
