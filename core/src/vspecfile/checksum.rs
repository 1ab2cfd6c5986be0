//! The file checksum (XXH64 in two steps, see the module docs of `vspecfile`).
//!
//! XXH64 itself is the `xxhash-rust` crate's (no_std): it gives libxxhash's values bit for bit,
//! so files written with the hand-written hasher it replaced still verify, at the same speed.

pub use xxhash_rust::xxh64::{xxh64, Xxh64};

use super::read::frame;
use super::to_usize;
use crate::error::{Error, Result};
use alloc::format;
use alloc::string::String;

/// Checks the stored checksum against one computed over the file (reads every byte). The error
/// is `Invalid { field: "checksum", reason: "stored X, computed Y: the file is corrupt" }`.
pub fn verify_checksum(bytes: &[u8]) -> Result<()> {
    let fr = frame(bytes)?;
    let what = || String::from("vspec data section");
    let d0 = to_usize(fr.data_offset, &what)?;
    let d1 = to_usize(fr.data_offset + fr.data_len, &what)?;
    let computed = checksum(&bytes[..d0], &bytes[d0..d1]);
    if computed != fr.checksum {
        return Err(Error::invalid(
            "checksum",
            format!(
                "stored {:#018x}, computed {computed:#018x}: the file is corrupt",
                fr.checksum
            ),
        ));
    }
    Ok(())
}

/// The file checksum from the bytes before the data section and the data section.
pub fn checksum(head: &[u8], data: &[u8]) -> u64 {
    combine_checksum(head, xxh64(data, 0))
}

/// The file checksum from the bytes before the data section and the data section's XXH64
/// (seed 0), for writers that hashed the data while streaming it.
pub fn combine_checksum(head: &[u8], data_hash: u64) -> u64 {
    xxh64(head, data_hash)
}
