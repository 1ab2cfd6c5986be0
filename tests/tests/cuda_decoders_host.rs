//! The CUDA decoders (`cuda-shell/kernels/formats_*.cu`) compiled for the host with the system
//! C++ compiler and checked bit for bit against the scalar decoders, on every machine: without a
//! GPU this is the only run the device decoders' index and rounding logic gets. The host prelude
//! of `vspec_tests::cuda_host` stands in for `prelude.cu` (its PTX conversions become exact C++;
//! `__fmul_rn` and friends plain operations with contraction off, which is what they mean), then
//! the format files are included unchanged.
//!
//! What this does not cover: the PTX `cvt` instructions themselves and anything about the GPU
//! (`cuda_kernels_host.rs` runs the op kernels; `cuda_gpu.rs` checks the decoders on a device).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use vspec_core::format::Format;
use vspec_cuda::kernels;
use vspec_tests::encode::{encode, values};

/// Compiles the harness once: `harness FMT N < lut row > f32s`.
fn harness() -> Option<PathBuf> {
    let mut main = String::from(
        "static float dq(int fmt, const u8* row, int i, const i8* lut) {\n switch (fmt) {\n",
    );
    for f in kernels::device_formats() {
        let id = kernels::format_id(f).unwrap();
        main.push_str(&format!(
            "  case {}: return F_{}::dq(row, i, lut);\n",
            id.id, id.name
        ));
    }
    main.push_str(
        r#"  default: abort(); } }
int main(int argc, char** argv) {
    int fmt = atoi(argv[1]), n = atoi(argv[2]);
    i8 lut[256];
    if (fread(lut, 1, 256, stdin) != 256) return 2;
    std::vector<u8> row;
    int c;
    while ((c = getchar()) != EOF) row.push_back((u8)c);
    std::vector<float> out(n);
    for (int i = 0; i < n; ++i) out[i] = dq(fmt, row.data(), i, lut);
    fwrite(out.data(), 4, n, stdout);
    return 0;
}
"#,
    );
    vspec_tests::cuda_host::compile(
        env!("CARGO_TARGET_TMPDIR"),
        "decoders",
        &["formats_gguf.cu", "formats_vspec.cu"],
        &main,
    )
}

fn host_decode(exe: &PathBuf, format: Format, row: &[u8], n: usize) -> Vec<f32> {
    let id = kernels::format_id(format).unwrap().id;
    let lut: Vec<u8> = kernels::codebook(format)
        .map(|c| c.iter().map(|&v| v as u8).collect())
        .unwrap_or_else(|| vec![0; 256]);
    let mut child = Command::new(exe)
        .args([id.to_string(), n.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&lut).unwrap();
    stdin.write_all(row).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{format:?}: harness failed");
    out.stdout
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn cpu_decode(format: Format, row: &[u8], n: usize) -> Vec<f32> {
    let spec = format.spec();
    let mut out = vec![0f32; n];
    for (b, o) in row
        .chunks_exact(spec.block_bytes)
        .zip(out.chunks_exact_mut(spec.block_elems))
    {
        (spec.decode)(b, o);
    }
    out
}

fn assert_same_bits(format: Format, what: &str, cpu: &[f32], dev: &[f32]) {
    assert_eq!(cpu.len(), dev.len());
    for (i, (a, b)) in cpu.iter().zip(dev).enumerate() {
        assert!(
            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            "{format:?} ({what}): element {i} is {b} from the CUDA decoder, {a} from the scalar one"
        );
    }
}

#[test]
fn cuda_decoders_compiled_for_the_host_equal_the_scalar_decoders() {
    let Some(exe) = harness() else { return };
    let n = 1024;
    for format in kernels::device_formats() {
        // Quantized rows (the values real weights take)…
        let row = encode(format, &values(n, format as u64 + 3));
        let dev = host_decode(&exe, format, &row, n);
        assert_same_bits(format, "quantized", &cpu_decode(format, &row, n), &dev);
        // …and arbitrary bytes (every bit of every field, subnormal, infinite and NaN scales).
        let bytes = format.tensor_bytes(n, 1, "row").unwrap();
        let mut s = 0x2545_F491_4F6C_DD1Du64 ^ format as u64;
        let row: Vec<u8> = (0..bytes)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect();
        let dev = host_decode(&exe, format, &row, n);
        assert_same_bits(format, "random bytes", &cpu_decode(format, &row, n), &dev);
        println!("{format:?}: {n} weights bit-identical (quantized and random rows)");
    }
}
