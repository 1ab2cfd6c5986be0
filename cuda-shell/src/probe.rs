//! Loading the kernels on a device, and small device measurements without a model: the GPU
//! tests' per-format decoder check and `check.sh`'s copy bandwidth.

use crate::device::{guarded, Device};
use crate::kernels;
use cudarc::driver::{CudaFunction, CudaModule, LaunchConfig, PushKernelArg};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use vspec_core::format::Format;
use vspec_core::Result;

/// The compiled program on a device, every kernel looked up by name.
pub(crate) type Loaded = (Arc<CudaModule>, HashMap<String, CudaFunction>);

/// Compiles the kernels for the device's architecture (CUBIN, so no PTX JIT and no dependence
/// on the driver's PTX version) and loads every kernel the host names.
pub(crate) fn load(device: &Device) -> Result<Loaded> {
    let arch = device.arch()?;
    let cubin = cubin_for(arch)?;
    let module = guarded("cuModuleLoadData", || {
        device
            .ctx
            .load_module(cudarc::nvrtc::Ptx::from_binary(cubin))
    })?
    .map_err(|e| crate::backend(format!("loading the kernels for sm_{arch}: {e}")))?;
    let mut funcs = HashMap::new();
    for name in kernels::kernel_names() {
        let f = module
            .load_function(&name)
            .map_err(|e| crate::backend(format!("kernel {name}: {e}")))?;
        funcs.insert(name, f);
    }
    Ok((module, funcs))
}

/// The CUBIN for `sm_<arch>`, compiled once per process: NVRTC takes seconds for the whole
/// program, and a process may open several sessions (the GPU tests open nine).
fn cubin_for(arch: u32) -> Result<Vec<u8>> {
    static CACHE: Mutex<Vec<(u32, Vec<u8>)>> = Mutex::new(Vec::new());
    // A poisoned lock only means another thread panicked mid-compile; the cache is still valid.
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, c)) = cache.iter().find(|(a, _)| *a == arch) {
        return Ok(c.clone());
    }
    let cubin = crate::nvrtc::compile(arch)?.cubin;
    cache.push((arch, cubin.clone()));
    Ok(cubin)
}

/// The kernels on a device, for tests and measurements that need no model.
pub struct Probe {
    device: Device,
    _module: Arc<CudaModule>,
    funcs: HashMap<String, CudaFunction>,
}

impl Probe {
    /// Compiles and loads the kernels on `device`.
    pub fn new(device: Device) -> Result<Probe> {
        let (module, funcs) = load(&device)?;
        Ok(Probe {
            device,
            _module: module,
            funcs,
        })
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Decodes the first `n` weights of `row` (whole blocks of `format`) on the device with the
    /// format's `dq` (the decoder every matmul of that format uses).
    pub fn dequantize(&self, format: Format, row: &[u8], n: usize) -> Result<Vec<f32>> {
        let id = kernels::format_id(format)
            .ok_or_else(|| crate::backend(format!("no kernels for {format:?}")))?;
        let need = format.tensor_bytes(n, 1, "probe row")?;
        if row.len() < need {
            return Err(vspec_core::Error::truncated(
                "probe row",
                need as u64,
                row.len() as u64,
            ));
        }
        let stream = &self.device.stream;
        let map = |e: cudarc::driver::DriverError| crate::backend(format!("dequantize: {e}"));
        let d_row = stream.clone_htod(&row[..need]).map_err(map)?;
        let lut: Vec<u8> = kernels::codebook(format)
            .map(|c| c.iter().map(|&v| v as u8).collect())
            .unwrap_or_else(|| vec![0u8; 256]);
        let d_lut = stream.clone_htod(&lut).map_err(map)?;
        let mut d_out = stream.alloc_zeros::<f32>(n.max(1)).map_err(map)?;
        let f = &self.funcs["dequant_row"];
        let (fmt, n_i) = (id.id, n as i32);
        let cfg = LaunchConfig {
            grid_dim: (n.div_ceil(256).max(1) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = stream.launch_builder(f);
        b.arg(&fmt)
            .arg(&d_row)
            .arg(&d_lut)
            .arg(&mut d_out)
            .arg(&n_i);
        // SAFETY: dequant_row(int fmt, const u8* row, const i8* lut, float* out, int n): the
        // arguments match, `row` holds the `n` weights' whole blocks, `lut` 256 entries, `out` n.
        unsafe { b.launch(cfg) }.map_err(map)?;
        let out = stream.clone_dtoh(&d_out).map_err(map)?;
        Ok(out[..n].to_vec())
    }

    /// Device-to-device copy bandwidth in GB/s (bytes read + written per second) over `reps`
    /// copies of `bytes`: the ceiling a weight-streaming decode step can approach.
    pub fn copy_bandwidth(&self, bytes: usize, reps: usize) -> Result<f64> {
        let stream = &self.device.stream;
        let map = |e: cudarc::driver::DriverError| crate::backend(format!("copy bandwidth: {e}"));
        let src = stream.alloc_zeros::<u8>(bytes).map_err(map)?;
        let mut dst = stream.alloc_zeros::<u8>(bytes).map_err(map)?;
        stream.memcpy_dtod(&src, &mut dst).map_err(map)?;
        stream.synchronize().map_err(map)?;
        let t = Instant::now();
        for _ in 0..reps {
            stream.memcpy_dtod(&src, &mut dst).map_err(map)?;
        }
        stream.synchronize().map_err(map)?;
        let secs = t.elapsed().as_secs_f64();
        Ok(2.0 * bytes as f64 * reps as f64 / secs / 1e9)
    }
}
