//! CUDA backend of Vspec (issue 14): the same `Graph`, `Plan` and packed weights as the CPU
//! path, run by kernels compiled at run time by NVRTC from the CUDA C sources in `kernels/`.
//!
//! cudarc loads the driver (`libcuda.so`) and NVRTC dynamically, so this crate builds and its
//! host-side tests run on machines without CUDA; opening a device there is an
//! [`vspec_core::Error::Backend`] that names what is missing.
//!
//! - [`device`]: opening `cuda:N`, never panicking when the driver is absent;
//! - [`nvrtc`]: finding NVRTC, compiling the sources to PTX/CUBIN;
//! - [`kernels`]: the sources and the names of what they define;
//! - [`launch`]: the kernel launches of a step as data (checked without a GPU): which GEMV, on
//!   f32 or 8-bit activations, and which ops launch together;
//! - [`layout`]: the one device allocation, a pure function of graph and plan;
//! - [`probe`]: loading the kernels; per-kernel checks and copy bandwidth without a model;
//! - [`session`]: [`CudaSession`], implementing [`vspec_core::exec::Executor`].
//!
//! What has run where is stated in the README's CUDA section (last GPU run: `check.sh` on an
//! NVIDIA H200, 2026-12-04 18:21 UTC, every GPU test passed; the Qwen3-8B shape in `--bits 4`
//! decoded 273 tok/s, 31 % of the copy bandwidth).

pub mod device;
pub mod kernels;
pub mod launch;
pub mod layout;
pub mod nvrtc;
pub mod probe;
pub mod session;

pub use device::Device;
pub use layout::DeviceLayout;
pub use probe::Probe;
pub use session::CudaSession;

/// The error every device failure becomes.
pub(crate) fn backend(message: impl Into<String>) -> vspec_core::Error {
    vspec_core::Error::Backend {
        backend: "cuda",
        message: message.into(),
    }
}

/// Whether a CUDA device can be used: the driver loads and reports at least one device.
pub fn available() -> bool {
    matches!(device::device_count(), Ok(n) if n > 0)
}

/// One line on the backend's state on this machine, for `--device` errors and reports.
pub fn status() -> String {
    match device::device_count() {
        Ok(0) => "CUDA driver loaded, but it reports no device".into(),
        Ok(n) => format!("{n} CUDA device(s) available"),
        Err(e) => e.to_string(),
    }
}

/// Parses a `--device` value: `cpu` gives `None`, `cuda` or `cuda:N` gives `Some(N)`.
pub fn parse_device(s: &str) -> Result<Option<usize>, String> {
    match s {
        "cpu" => Ok(None),
        "cuda" => Ok(Some(0)),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Ok(Some(n)),
            _ => Err(format!(
                "unknown device '{s}' (expected cpu, cuda or cuda:N)"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse() {
        assert_eq!(parse_device("cpu"), Ok(None));
        assert_eq!(parse_device("cuda"), Ok(Some(0)));
        assert_eq!(parse_device("cuda:3"), Ok(Some(3)));
        assert!(parse_device("cuda:x").is_err());
        assert!(parse_device("gpu").is_err());
    }

    #[test]
    fn status_is_honest() {
        // On a machine without a driver this must be an explanation, not a panic; with one, a
        // count. Either way `available()` agrees with it.
        let s = status();
        assert_eq!(available(), s.ends_with("available"), "{s}");
    }
}
