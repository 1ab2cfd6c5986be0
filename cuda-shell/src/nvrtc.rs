//! Finding NVRTC and compiling the kernel sources with it, on any machine (no GPU needed).
//!
//! cudarc loads NVRTC by library name. To use a specific file (the pinned PyPI wheel in CI, or
//! `VSPEC_NVRTC_LIB`), we first open that file by path and keep it open: the dynamic loader then
//! answers cudarc's later `dlopen("libnvrtc.so.12")` with the already-loaded library, whose
//! SONAME is that name. cudarc panics when no library is found, so [`load`] checks presence first
//! and [`compile`] is only reachable after it succeeded.

use crate::kernels;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use vspec_core::Result;

/// The NVRTC opened by path, kept for the life of the process (see the module doc).
static PRELOADED: OnceLock<std::result::Result<Option<libloading::Library>, String>> =
    OnceLock::new();

/// Where the pinned wheel lands when `.ci/run` installs it (relative to the workspace root).
const CI_VENV: &str = "target/venv-nvrtc";

/// The NVRTC file to open by path: `VSPEC_NVRTC_LIB`, else the CI venv's wheel, else none (the
/// loader's search path decides).
pub fn library_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VSPEC_NVRTC_LIB") {
        return Some(PathBuf::from(p));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(CI_VENV);
    std::fs::read_dir(root.join("lib")).ok()?.find_map(|e| {
        let p = e
            .ok()?
            .path()
            .join("site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12");
        p.is_file().then_some(p)
    })
}

/// Makes NVRTC available to cudarc, or says why it is not: the file that failed to open, or the
/// library names that were searched.
pub fn load() -> Result<()> {
    let pre = PRELOADED.get_or_init(|| match library_path() {
        Some(path) => {
            // SAFETY: loading NVRTC runs its initializers, which have no preconditions; the
            // handle is kept in a static so the library is never unloaded while in use.
            unsafe { libloading::Library::new(&path) }
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display()))
        }
        None => Ok(None),
    });
    if let Err(e) = pre {
        return Err(crate::backend(format!("NVRTC not found ({e})")));
    }
    // SAFETY: only tries to open candidate library names; no NVRTC function is called.
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(crate::backend(
            "NVRTC not found (no libnvrtc.so on the loader's path; set VSPEC_NVRTC_LIB to the \
             library file, or install the nvidia-cuda-nvrtc-cu12 wheel)",
        ))
    }
}

/// NVRTC's version, `(major, minor)`.
pub fn version() -> Result<(i32, i32)> {
    load()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: NVRTC is loaded (checked above); both pointers are valid for writes.
    let r = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    check(r, "nvrtcVersion")?;
    Ok((major, minor))
}

/// What NVRTC produced for one architecture.
#[derive(Debug)]
pub struct Compiled {
    /// The PTX text.
    pub ptx: String,
    /// The device code for `sm_XY` (what the session loads: it needs no PTX JIT, so a driver
    /// older than this NVRTC still accepts it).
    pub cubin: Vec<u8>,
}

/// Compiles the whole kernel program ([`kernels::program`]) for `sm_<arch>` (e.g. 80, 90).
pub fn compile(arch: u32) -> Result<Compiled> {
    compile_source(&kernels::program(), "vspec_kernels.cu", arch)
}

/// Compiles `src` for `sm_<arch>`; a compile error carries NVRTC's log.
pub fn compile_source(src: &str, name: &str, arch: u32) -> Result<Compiled> {
    load()?;
    let src_c =
        CString::new(src).map_err(|_| crate::backend(format!("{name}: NUL byte in the source")))?;
    let name_c = CString::new(name).map_err(|_| crate::backend("NUL byte in the program name"))?;
    let prog = cudarc::nvrtc::result::create_program(&src_c, Some(&name_c))
        .map_err(|e| crate::backend(format!("{name}: nvrtcCreateProgram: {e:?}")))?;
    let opts = [
        format!("--gpu-architecture=sm_{arch}"),
        "--std=c++17".to_string(),
    ];
    // SAFETY: `prog` was created above and is destroyed only at the end of this function.
    let compiled = unsafe { cudarc::nvrtc::result::compile_program(prog, &opts) };
    let out = match compiled {
        Err(e) => {
            // SAFETY: as above.
            let log = unsafe { program_log(prog) };
            Err(crate::backend(format!(
                "{name} for sm_{arch}: {e:?}\n{log}"
            )))
        }
        // SAFETY: as above; the program compiled.
        Ok(()) => unsafe { outputs(prog) }
            .map_err(|e| crate::backend(format!("{name} for sm_{arch}: {e}"))),
    };
    // SAFETY: `prog` is valid and not used afterwards.
    let _ = unsafe { cudarc::nvrtc::result::destroy_program(prog) };
    out
}

/// The compile log of `prog` as text (empty when NVRTC gives none).
///
/// # Safety
/// `prog` is a live NVRTC program.
unsafe fn program_log(prog: cudarc::nvrtc::sys::nvrtcProgram) -> String {
    // SAFETY: the caller's promise.
    match unsafe { cudarc::nvrtc::result::get_program_log(prog) } {
        Ok(chars) => {
            let bytes: Vec<u8> = chars
                .iter()
                .map(|&c| c as u8)
                .take_while(|&b| b != 0)
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        Err(_) => String::new(),
    }
}

/// The PTX and CUBIN of a compiled program.
///
/// # Safety
/// `prog` is a live NVRTC program that compiled successfully.
unsafe fn outputs(prog: cudarc::nvrtc::sys::nvrtcProgram) -> std::result::Result<Compiled, String> {
    // SAFETY: the caller's promise.
    let ptx = unsafe { cudarc::nvrtc::result::get_ptx(prog) }.map_err(|e| format!("{e:?}"))?;
    let ptx: Vec<u8> = ptx
        .iter()
        .map(|&c| c as u8)
        .take_while(|&b| b != 0)
        .collect();
    let mut size = 0usize;
    // SAFETY: `prog` compiled; `size` is valid for writes.
    let r = unsafe { cudarc::nvrtc::sys::nvrtcGetCUBINSize(prog, &mut size) };
    check(r, "nvrtcGetCUBINSize").map_err(|e| e.to_string())?;
    let mut cubin = vec![0u8; size];
    // SAFETY: `cubin` has the `size` bytes NVRTC asked for.
    let r = unsafe { cudarc::nvrtc::sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr().cast()) };
    check(r, "nvrtcGetCUBIN").map_err(|e| e.to_string())?;
    Ok(Compiled {
        ptx: String::from_utf8_lossy(&ptx).into_owned(),
        cubin,
    })
}

fn check(r: cudarc::nvrtc::sys::nvrtcResult, what: &str) -> Result<()> {
    if r == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        Err(crate::backend(format!("{what}: {r:?}")))
    }
}
