//! Loading the kernels on a device, and small device measurements without a model: the GPU
//! tests' per-format decoder check and `check.sh`'s copy bandwidth.

use crate::device::{guarded, Device};
use crate::kernels;
use cudarc::driver::{CudaFunction, CudaModule, CudaSlice, LaunchConfig, PushKernelArg};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use vspec_core::format::Format;
use vspec_core::quant::act_q8::{BlockQ8Act, QK8};
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

    /// `y = W x` by `format`'s one-token GEMV in `variant`: `w` holds `rows` encoded rows of
    /// `cols` weights, `x` `cols` floats.
    /// The GPU tests compare it with the CPU; [`Probe::gemv_speed`] times the same launch.
    pub fn gemv(
        &self,
        format: Format,
        w: &[u8],
        x: &[f32],
        rows: usize,
        variant: GemvVariant,
    ) -> Result<Vec<f32>> {
        let map = |e: cudarc::driver::DriverError| crate::backend(format!("gemv: {e}"));
        let g = self.gemv_operands(format, w, x, rows, variant)?;
        let mut d_y = self.device.stream.alloc_zeros::<f32>(rows).map_err(map)?;
        self.launch_gemv(&g, &mut d_y, 1)?;
        self.device.stream.clone_dtoh(&d_y).map_err(map)
    }

    /// One-token matmul speed of `format`'s GEMV (the kernel every decode step runs) in
    /// `variant`: `row` (one encoded row of `cols` weights) repeated `rows` times,
    /// multiplied by a fixed vector `reps` times after one warm-up call. Returns GB/s of weight
    /// bytes read and µs per call; size `rows` so the matrix is several times the L2 cache.
    pub fn gemv_speed(
        &self,
        format: Format,
        row: &[u8],
        cols: usize,
        rows: usize,
        variant: GemvVariant,
        reps: usize,
    ) -> Result<(f64, f64)> {
        let map = |e: cudarc::driver::DriverError| crate::backend(format!("gemv speed: {e}"));
        if row.len() != format.tensor_bytes(cols, 1, "probe row")? {
            return Err(vspec_core::Error::invalid(
                "probe row",
                format!("{} bytes are not one row of {cols} weights", row.len()),
            ));
        }
        let x: Vec<f32> = (0..cols)
            .map(|i| ((i * 7919) % 255) as f32 / 255.0 - 0.5)
            .collect();
        let g = self.gemv_operands(format, &row.repeat(rows), &x, rows, variant)?;
        let mut d_y = self.device.stream.alloc_zeros::<f32>(rows).map_err(map)?;
        self.launch_gemv(&g, &mut d_y, 1)?;
        self.device.stream.synchronize().map_err(map)?;
        let t = Instant::now();
        self.launch_gemv(&g, &mut d_y, reps)?;
        self.device.stream.synchronize().map_err(map)?;
        let secs = t.elapsed().as_secs_f64() / reps as f64;
        Ok(((rows * g.row_bytes) as f64 / secs / 1e9, secs * 1e6))
    }

    /// Checks a GEMV's operands and copies them to the device.
    fn gemv_operands(
        &self,
        format: Format,
        w: &[u8],
        x: &[f32],
        rows: usize,
        variant: GemvVariant,
    ) -> Result<GemvOperands> {
        let GemvVariant { split, int8 } = variant;
        let id = kernels::format_id(format)
            .ok_or_else(|| crate::backend(format!("no kernels for {format:?}")))?;
        let cols = x.len();
        let row_bytes = format.tensor_bytes(cols, 1, "probe row")?;
        if w.len() != rows * row_bytes {
            return Err(vspec_core::Error::truncated(
                "probe matrix",
                (rows * row_bytes) as u64,
                w.len() as u64,
            ));
        }
        if ![1, 2, 4].contains(&split) {
            return Err(vspec_core::Error::invalid(
                "gemv split",
                format!("{split} warps per row (1, 2 or 4)"),
            ));
        }
        if int8 && !(kernels::has_int8_gemv(format) && cols.is_multiple_of(QK8)) {
            return Err(crate::backend(format!(
                "no 8-bit activation GEMV for {format:?} over {cols} columns"
            )));
        }
        let stream = &self.device.stream;
        let map = |e: cudarc::driver::DriverError| crate::backend(format!("gemv: {e}"));
        // The activation as the kernel reads it: f32, or quants, scales and sums (gemv_q8.cu).
        let x_bytes: Vec<u8> = if int8 {
            let blocks: Vec<BlockQ8Act> = x.chunks_exact(QK8).map(BlockQ8Act::quantize).collect();
            let mut v: Vec<u8> = blocks.iter().flat_map(|b| b.qs.map(|q| q as u8)).collect();
            v.extend(blocks.iter().flat_map(|b| b.d.to_le_bytes()));
            v.extend(blocks.iter().flat_map(|b| b.sum.to_le_bytes()));
            v
        } else {
            x.iter().flat_map(|v| v.to_le_bytes()).collect()
        };
        let lut: Vec<u8> = kernels::codebook(format)
            .map(|c| c.iter().map(|&v| v as u8).collect())
            .unwrap_or_else(|| vec![0u8; 256]);
        Ok(GemvOperands {
            kernel: format!("{}_{}", if int8 { "gemvq" } else { "gemv" }, id.name),
            w: stream.clone_htod(w).map_err(map)?,
            x: stream.clone_htod(&x_bytes).map_err(map)?,
            lut: stream.clone_htod(&lut).map_err(map)?,
            rows,
            cols,
            row_bytes,
            split,
        })
    }

    /// Launches the GEMV of `g` into `y` (`g.rows` floats) `times` times.
    fn launch_gemv(&self, g: &GemvOperands, y: &mut CudaSlice<f32>, times: usize) -> Result<()> {
        let stream = &self.device.stream;
        let map = |e: cudarc::driver::DriverError| crate::backend(format!("gemv: {e}"));
        let f = &self.funcs[&g.kernel];
        let cfg = LaunchConfig {
            grid_dim: (g.rows.div_ceil(4 / g.split) as u32, 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let (no_bias, no_fmt) = (0u64, 0i32);
        let (rows, cols) = (g.rows as i32, g.cols as i32);
        let (row_bytes, split) = (g.row_bytes as i32, g.split as i32);
        for _ in 0..times {
            let mut b = stream.launch_builder(f);
            b.arg(&g.x)
                .arg(&g.w)
                .arg(&g.lut)
                .arg(&no_bias)
                .arg(&no_fmt)
                .arg(&mut *y)
                .arg(&rows)
                .arg(&cols)
                .arg(&row_bytes)
                .arg(&split);
            // SAFETY: gemv_<fmt>(x, w, lut, bias, bias_fmt, y, rows, cols, row_bytes, split) and
            // gemvq_<fmt>(act, ...) with the same parameters: the arguments match; `w` holds
            // `rows` rows of `row_bytes` (checked in gemv_operands), `x` `cols` floats or the
            // `cols`-column 8-bit layout, `y` `rows`, `lut` 256 entries, a null bias is never
            // read, and `split` divides the block's four warps.
            unsafe { b.launch(cfg) }.map_err(map)?;
        }
        Ok(())
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

/// Which one-token GEMV of a format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemvVariant {
    /// Warps sharing one row: 1, 2 or 4.
    pub split: usize,
    /// On 8-bit activations (`x` quantized as the CPU's `BlockQ8Act`; formats with
    /// [`kernels::has_int8_gemv`]) rather than f32.
    pub int8: bool,
}

/// A GEMV's operands on the device.
struct GemvOperands {
    kernel: String,
    w: CudaSlice<u8>,
    /// f32 activations, or the 8-bit layout of gemv_q8.cu.
    x: CudaSlice<u8>,
    lut: CudaSlice<u8>,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    split: usize,
}
