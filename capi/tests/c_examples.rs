//! The C examples (`capi/examples/*.c`), compiled by the system C compiler against the header and
//! linked with the shared and the static library, then run: every error path on a small fixture
//! model, and greedy generation on the default model, which must print what `vspec generate
//! --temp 0` prints (through `vspec_generate`, and through the embedded eval/sample loop over a
//! model in memory and a session in a caller buffer).
//!
//! With valgrind installed the programs also run under it (definite or indirect leaks and invalid
//! reads or writes fail the test); `VSPEC_REQUIRE_VALGRIND=1` (CI) makes its absence a failure.
//! "Possibly lost" blocks are not counted: they are process-wide caches built once (minijinja's
//! builtin tables, the regex engine's lazy DFA), the same size however many calls ran.

#[path = "../../host-std/tests/common/smollm2.rs"]
mod smollm2;

use std::path::{Path, PathBuf};
use std::process::Command;

const PROMPTS: [&str; 2] = [
    "The capital of France is",
    "<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n",
];

/// `target/release` (or whichever profile dir holds this test binary), where the `vspec` binary
/// is.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// Where this test run's `libvspec.so` and `libvspec.a` are: `deps/` next to the test binary
/// (`cargo test` builds them there and, unlike `cargo build`, does not copy them up a level, so
/// the copies there may be stale).
fn lib_dir() -> PathBuf {
    std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[derive(Clone, Copy, Debug)]
enum Link {
    Shared,
    Static,
}

/// Compiles `examples/NAME.c` with warnings as errors and links it the given way.
fn build(name: &str, link: Link) -> PathBuf {
    let lib = lib_dir();
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c_examples");
    std::fs::create_dir_all(&out_dir).unwrap();
    let exe = out_dir.join(format!("{name}_{link:?}").to_lowercase());
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let mut cmd = Command::new(&cc);
    cmd.args([
        "-std=c11",
        "-O1",
        "-g",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-pedantic",
    ])
    .arg("-I")
    .arg(crate_dir().join("include"))
    .arg(crate_dir().join(format!("examples/{name}.c")))
    .arg("-o")
    .arg(&exe);
    match link {
        Link::Shared => {
            let so = lib.join("libvspec.so");
            assert!(so.is_file(), "{} is missing", so.display());
            cmd.arg("-L").arg(&lib).arg("-lvspec");
            cmd.arg(format!("-Wl,-rpath,{}", lib.display()));
        }
        Link::Static => {
            let a = lib.join("libvspec.a");
            assert!(a.is_file(), "{} is missing", a.display());
            cmd.arg(a);
        }
    }
    // What a static Rust library needs from the C side (vspec.pc's Libs.private).
    cmd.args(["-lpthread", "-ldl", "-lm"]);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cc}: {e}"));
    assert!(
        out.status.success(),
        "{cc} failed on {name}.c ({link:?}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// Runs `exe` with `args`, under valgrind when `valgrind` is set; returns stdout, failing on a
/// non-zero exit (valgrind's own errors exit with 99).
fn run(exe: &Path, args: &[&str], valgrind: bool) -> String {
    let mut cmd = if valgrind {
        let mut c = Command::new("valgrind");
        c.args([
            "-q",
            "--error-exitcode=99",
            "--leak-check=full",
            "--show-leak-kinds=definite,indirect",
            "--errors-for-leak-kinds=definite,indirect",
        ])
        .arg(exe)
        // valgrind does not emulate AVX-512: stop at the AVX2 tier (a no-op on older CPUs).
        .env("VSPEC_ISA", "avx2");
        c
    } else {
        Command::new(exe)
    };
    // cargo points LD_LIBRARY_PATH at target/release too, whose libvspec.so may be an older
    // build than deps/'s: the examples must load the one their runpath names.
    let out = cmd
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} {args:?}{} exited with {}:\n{stdout}\n{}",
        exe.display(),
        if valgrind { " under valgrind" } else { "" },
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Whether the valgrind runs happen: valgrind present, or required by `VSPEC_REQUIRE_VALGRIND=1`.
fn valgrind_available() -> bool {
    let found = Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("VSPEC_REQUIRE_VALGRIND").as_deref() != Ok("1"),
            "VSPEC_REQUIRE_VALGRIND=1 but valgrind is not installed"
        );
        println!("SKIPPED(no valgrind): the C examples ran without it");
    }
    found
}

/// What `vspec generate --temp 0` prints for `prompt` (stdout only).
fn cli_greedy(model: &Path, prompt: &str, n: usize) -> Option<String> {
    let vspec = profile_dir().join("vspec");
    if !vspec.is_file() {
        assert!(
            std::env::var("VSPEC_REQUIRE_MODEL").as_deref() != Ok("1"),
            "{} is missing: build it with `cargo build --release -p vspec-host`",
            vspec.display()
        );
        println!("SKIPPED(no CLI): {} is absent", vspec.display());
        return None;
    }
    let out = Command::new(vspec)
        .arg("generate")
        .arg("-m")
        .arg(model)
        .args([
            "-p",
            prompt,
            "-n",
            &n.to_string(),
            "--temp",
            "0",
            "-c",
            "512",
            "-t",
            "1",
            // The C examples keep the C API's default f32 KV cache; the CLI's is f16.
            "--kv",
            "f32",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

#[test]
fn every_error_path_shared_and_static() {
    let fixture = crate_dir().join("../tests/fixtures/hf/llama");
    let fixture = fixture.to_str().unwrap();
    for link in [Link::Shared, Link::Static] {
        let out = run(&build("errors", link), &[fixture], false);
        assert!(out.contains("PASSED: 0 failure(s)"), "{out}");
    }
    if valgrind_available() {
        run(&build("errors", Link::Static), &[fixture], true);
    }
}

#[test]
fn plan_example_prints_the_plan() {
    let fixture = crate_dir().join("../tests/fixtures/hf/llama");
    let out = run(
        &build("plan", Link::Shared),
        &[fixture.to_str().unwrap(), "64"],
        false,
    );
    // 2 layers × (k, v) × 64 positions × 2 KV heads × 16 dims × 4 bytes.
    assert!(
        out.contains(&format!("kv {} bytes", 2 * 2 * 64 * 2 * 16 * 4)),
        "{out}"
    );
}

#[test]
fn greedy_generation_equals_the_cli() {
    let Some(model) = smollm2::smollm2_gguf() else {
        return;
    };
    let model_arg = model.to_str().unwrap();
    let generate = build("generate", Link::Shared);
    let embedded = build("embedded", Link::Static);
    for prompt in PROMPTS {
        let Some(expected) = cli_greedy(&model, prompt, 32) else {
            return;
        };
        assert!(expected.trim().len() > 10, "CLI printed {expected:?}");
        let got = run(&generate, &[model_arg, prompt, "32", "1"], false);
        assert_eq!(got, expected, "generate.c (shared) on {prompt:?}");
        let got = run(&embedded, &[model_arg, prompt, "32", "2"], false);
        assert_eq!(got, expected, "embedded.c (static) on {prompt:?}");
    }
    if valgrind_available() {
        // Fewer tokens: every token runs the whole model, 30-50x slower under valgrind.
        let expected = cli_greedy(&model, PROMPTS[0], 3).unwrap();
        let got = run(&generate, &[model_arg, PROMPTS[0], "3", "1"], true);
        assert_eq!(got, expected, "generate.c under valgrind");
        let got = run(&embedded, &[model_arg, PROMPTS[0], "3", "2"], true);
        assert_eq!(got, expected, "embedded.c under valgrind");
    }
}

#[test]
fn pkg_config_builds_against_the_installed_library() {
    let has_pkg_config = Command::new("pkg-config")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_pkg_config {
        println!("SKIPPED(no pkg-config)");
        return;
    }
    let prefix = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c_install");
    let _ = std::fs::remove_dir_all(&prefix);
    let status = Command::new("bash")
        .arg(crate_dir().join("install.sh"))
        .arg(&prefix)
        .arg(lib_dir())
        .status()
        .unwrap();
    assert!(status.success(), "install.sh failed");
    let pc_path = prefix.join("lib/pkgconfig");
    let flags = |extra: &[&str]| -> Vec<String> {
        let out = Command::new("pkg-config")
            .env("PKG_CONFIG_PATH", &pc_path)
            .args(extra)
            .args(["--cflags", "--libs", "vspec"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    let shared = flags(&[]);
    assert!(shared.contains(&"-lvspec".to_string()), "{shared:?}");
    let exe = prefix.join("plan");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .arg(crate_dir().join("examples/plan.c"))
        .arg("-o")
        .arg(&exe)
        .args(&shared)
        .arg(format!("-Wl,-rpath,{}", prefix.join("lib").display()))
        .status()
        .unwrap();
    assert!(status.success(), "{cc} with pkg-config's flags failed");
    let fixture = crate_dir().join("../tests/fixtures/hf/llama");
    let out = run(&exe, &[fixture.to_str().unwrap(), "64"], false);
    assert!(
        out.starts_with(&format!("vspec {}", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    let static_flags = flags(&["--static"]);
    assert!(
        static_flags.contains(&"-lpthread".to_string()),
        "{static_flags:?}"
    );
}
