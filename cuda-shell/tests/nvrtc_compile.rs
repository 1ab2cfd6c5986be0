//! Every kernel source compiles with NVRTC to PTX (and CUBIN) for sm_80 and sm_90, on any
//! machine: no GPU or driver is needed, only the NVRTC library (`.ci/run` installs the pinned
//! PyPI wheel and sets `VSPEC_NVRTC_REQUIRED=1`, so there a missing NVRTC fails instead of
//! skipping).

use vspec_cuda::{kernels, nvrtc};

/// NVRTC, or `None` after printing why the test is skipped (a failure when required).
fn nvrtc_or_skip() -> Option<()> {
    match nvrtc::load() {
        Ok(()) => Some(()),
        Err(e) => {
            if std::env::var("VSPEC_NVRTC_REQUIRED").is_ok_and(|v| v == "1") {
                panic!("VSPEC_NVRTC_REQUIRED=1 but {e}");
            }
            println!("SKIPPED: NVRTC not found ({e})");
            None
        }
    }
}

#[test]
fn every_kernel_compiles_for_sm80_and_sm90() {
    if nvrtc_or_skip().is_none() {
        return;
    }
    let (major, minor) = nvrtc::version().unwrap();
    println!("NVRTC {major}.{minor}");
    for arch in [80, 90] {
        let out = nvrtc::compile(arch).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.ptx.contains(&format!(".target sm_{arch}")),
            "PTX targets sm_{arch}"
        );
        assert!(!out.cubin.is_empty());
        for name in kernels::kernel_names() {
            assert!(
                out.ptx.contains(&format!(".entry {name}(")),
                "sm_{arch}: kernel {name} missing from the PTX"
            );
        }
        println!(
            "sm_{arch}: {} kernels, PTX {} KiB, CUBIN {} KiB",
            kernels::kernel_names().len(),
            out.ptx.len() >> 10,
            out.cubin.len() >> 10
        );
    }
}

#[test]
fn a_compile_error_names_the_file_and_line() {
    if nvrtc_or_skip().is_none() {
        return;
    }
    let e = nvrtc::compile_source("#line 1 \"bad.cu\"\nint f() { return x; }\n", "bad.cu", 80)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.cu") && e.contains("undefined"), "{e}");
}
