//! Without a GPU: opening a device is an error that names the missing driver, never a panic.
//! (On a machine with one, `gpu.rs` runs instead; this test then only checks the happy path.)

use vspec_cuda::{device, Device};

#[test]
fn opening_a_device_without_a_driver_is_an_error() {
    match Device::open(0) {
        Ok(d) => {
            println!("a CUDA device is present: {}", d.name().unwrap_or_default());
            assert!(vspec_cuda::available());
        }
        Err(e) => {
            let msg = e.to_string();
            println!("{msg}");
            assert!(msg.starts_with("cuda backend:"), "{msg}");
            assert!(!vspec_cuda::available());
            if !device::driver_present() {
                assert!(msg.contains("libcuda"), "names the missing library: {msg}");
            }
        }
    }
}

#[test]
fn a_missing_ordinal_is_an_error() {
    if let Err(e) = Device::open(usize::MAX) {
        assert!(e.to_string().starts_with("cuda backend:"), "{e}");
    } else {
        panic!("device usize::MAX opened");
    }
}
