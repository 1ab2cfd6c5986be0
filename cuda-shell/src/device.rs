//! Opening a CUDA device through the driver library, loaded at run time.
//!
//! cudarc (with `dynamic-loading`) opens `libcuda.so` on first use and panics when it is absent
//! or lacks a symbol. [`Device::open`] first asks whether the library can be loaded, so a machine
//! without a driver gets an [`Error::Backend`](vspec_core::Error) naming what was searched, and
//! runs the remaining driver calls under `catch_unwind` so a missing symbol (a driver older than
//! the bindings) is an error too, never an abort.

use cudarc::driver::{CudaContext, CudaStream};
use std::sync::Arc;
use vspec_core::Result;

/// An open device: its context and the stream every kernel of a session runs on.
pub struct Device {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    ordinal: usize,
}

/// Whether the CUDA driver library can be loaded (it says nothing about devices).
pub fn driver_present() -> bool {
    // SAFETY: only tries to open candidate library names; no driver function is called.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Runs a cudarc call, turning a panic (missing library or symbol) into an error.
pub(crate) fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked".into());
        crate::backend(format!("{what}: {msg}"))
    })
}

/// The error for a machine without the driver library.
fn no_driver() -> vspec_core::Error {
    crate::backend(
        "no CUDA driver: libcuda.so (libcuda.so.1) could not be loaded; install the NVIDIA \
         driver or run on the CPU (--device cpu)",
    )
}

/// Number of CUDA devices, or why there are none usable.
pub fn device_count() -> Result<usize> {
    if !driver_present() {
        return Err(no_driver());
    }
    let n = guarded("cuDeviceGetCount", CudaContext::device_count)?
        .map_err(|e| crate::backend(format!("cuDeviceGetCount: {e}")))?;
    Ok(n.max(0) as usize)
}

impl Device {
    /// Opens device `ordinal` (`--device cuda:N`).
    pub fn open(ordinal: usize) -> Result<Device> {
        let n = device_count()?;
        if ordinal >= n {
            return Err(crate::backend(format!(
                "device cuda:{ordinal} does not exist ({n} CUDA device(s) found)"
            )));
        }
        let ctx = guarded("cuCtxCreate", || CudaContext::new(ordinal))?
            .map_err(|e| crate::backend(format!("cuda:{ordinal}: {e}")))?;
        // The session passes raw device addresses into one allocation and orders all work on
        // one stream, so cudarc's per-buffer events are not needed (and would be recorded into
        // the captured decode graph).
        // SAFETY: no CudaSlice exists yet on this context, and every later use is on `stream`.
        unsafe { ctx.disable_event_tracking() };
        let stream = guarded("cuStreamCreate", || ctx.new_stream())?
            .map_err(|e| crate::backend(format!("cuda:{ordinal}: new stream: {e}")))?;
        Ok(Device {
            ctx,
            stream,
            ordinal,
        })
    }

    /// The ordinal this device was opened with.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// The device's name (e.g. "NVIDIA H200").
    pub fn name(&self) -> Result<String> {
        self.ctx
            .name()
            .map_err(|e| crate::backend(format!("cuDeviceGetName: {e}")))
    }

    /// Total device memory in bytes.
    pub fn total_mem(&self) -> Result<usize> {
        self.ctx
            .total_mem()
            .map_err(|e| crate::backend(format!("cuDeviceTotalMem: {e}")))
    }

    /// Compute capability as `major * 10 + minor` (80 for A100, 90 for H100/H200): the
    /// architecture the kernels are compiled for.
    pub fn arch(&self) -> Result<u32> {
        let (major, minor) = self
            .ctx
            .compute_capability()
            .map_err(|e| crate::backend(format!("compute capability: {e}")))?;
        Ok((major * 10 + minor) as u32)
    }
}
