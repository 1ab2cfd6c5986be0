//! `--device` on the command line: `plan --device cuda` reports the CUDA backend's device bytes
//! without a device; running on CUDA without a driver is a clean error naming it; a bad device
//! name is a usage error. (On a machine with a GPU, `tests/tests/cuda_gpu.rs` runs the device.)

mod common;
use common::*;

#[test]
fn plan_reports_device_bytes_without_a_device() {
    let m = llama_dir();
    let (out, _) = succeeds(&["plan", "-m", s(&m), "-c", "256", "--device", "cuda"]);
    assert!(out.contains("device cuda:0 (one allocation):"), "{out}");
    let (json, _) = succeeds(&[
        "plan",
        "-m",
        s(&m),
        "-c",
        "256",
        "--device",
        "cuda:1",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let d = &v["device"];
    assert_eq!(d["device"], "cuda:1");
    let field = |k: &str| d[k].as_u64().unwrap();
    // The device holds the host plan's weights, arena and KV cache (same formats, same plan),
    // aligned, plus the attention partials.
    assert_eq!(field("arena_bytes"), v["arena_bytes"].as_u64().unwrap());
    assert_eq!(field("kv_bytes"), v["kv_bytes"].as_u64().unwrap());
    assert!(field("weight_bytes") >= v["weight_bytes"].as_u64().unwrap());
    assert!(
        field("total_bytes")
            >= field("weight_bytes")
                + field("arena_bytes")
                + field("kv_bytes")
                + field("attention_scratch_bytes")
    );
}

#[test]
fn running_on_cuda_without_a_driver_is_an_error_naming_it() {
    if vspec_cuda::device::driver_present() {
        println!("SKIPPED: a CUDA driver is present (this test covers machines without one)");
        return;
    }
    let m = llama_dir();
    for cmd in ["generate", "chat", "perplexity"] {
        let mut args = vec![cmd, "-m", s(&m), "--device", "cuda"];
        if cmd == "perplexity" {
            args.extend(["-f", "Cargo.toml"]);
        }
        fails_with(&args, &["cuda backend", "libcuda"]);
    }
    fails_with(
        &["generate", "-m", s(&m), "--device", "gpu"],
        &["unknown device 'gpu'"],
    );
}
