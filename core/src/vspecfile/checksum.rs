//! The file checksum (XXH64 in two steps, see the module docs of `vspecfile`).

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

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;

#[inline(always)]
fn round(acc: u64, input: u64) -> u64 {
    acc.wrapping_add(input.wrapping_mul(P2))
        .rotate_left(31)
        .wrapping_mul(P1)
}

#[inline(always)]
fn merge_round(acc: u64, val: u64) -> u64 {
    (acc ^ round(0, val)).wrapping_mul(P1).wrapping_add(P4)
}

#[inline(always)]
fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Streaming XXH64 (Yann Collet's xxHash, 64-bit variant): four independent lanes of
/// multiply-rotate over 32-byte stripes, then a merge and an avalanche. Pure and deterministic
/// on every platform; matches libxxhash's `XXH64` bit for bit.
#[derive(Debug, Clone)]
pub struct Xxh64 {
    seed: u64,
    v: [u64; 4],
    total: u64,
    buf: [u8; 32],
    buf_len: usize,
}

impl Xxh64 {
    /// A hasher with `seed`.
    pub fn new(seed: u64) -> Self {
        Xxh64 {
            seed,
            v: [
                seed.wrapping_add(P1).wrapping_add(P2),
                seed.wrapping_add(P2),
                seed,
                seed.wrapping_sub(P1),
            ],
            total: 0,
            buf: [0; 32],
            buf_len: 0,
        }
    }

    #[inline(always)]
    fn stripe(v: &mut [u64; 4], s: &[u8; 32]) {
        // Fixed-size array: the compiler proves every index in range (no checks in the loop).
        for (i, lane) in v.iter_mut().enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&s[i * 8..i * 8 + 8]);
            *lane = round(*lane, u64::from_le_bytes(w));
        }
    }

    /// Adds `data`.
    pub fn update(&mut self, mut data: &[u8]) {
        self.total = self.total.wrapping_add(data.len() as u64);
        if self.buf_len > 0 {
            let take = (32 - self.buf_len).min(data.len());
            self.buf[self.buf_len..self.buf_len + take].copy_from_slice(&data[..take]);
            self.buf_len += take;
            data = &data[take..];
            if self.buf_len < 32 {
                return;
            }
            let buf = self.buf;
            Self::stripe(&mut self.v, &buf);
            self.buf_len = 0;
        }
        let mut v = self.v;
        let mut chunks = data.chunks_exact(32);
        for s in &mut chunks {
            if let Ok(s) = <&[u8; 32]>::try_from(s) {
                Self::stripe(&mut v, s);
            }
        }
        self.v = v;
        let rest = chunks.remainder();
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buf_len = rest.len();
    }

    /// The hash of everything added so far.
    pub fn digest(&self) -> u64 {
        let [v1, v2, v3, v4] = self.v;
        let mut h = if self.total >= 32 {
            let mut h = v1
                .rotate_left(1)
                .wrapping_add(v2.rotate_left(7))
                .wrapping_add(v3.rotate_left(12))
                .wrapping_add(v4.rotate_left(18));
            h = merge_round(h, v1);
            h = merge_round(h, v2);
            h = merge_round(h, v3);
            merge_round(h, v4)
        } else {
            self.seed.wrapping_add(P5)
        };
        h = h.wrapping_add(self.total);
        let mut rest = &self.buf[..self.buf_len];
        while rest.len() >= 8 {
            h ^= round(0, le64(rest));
            h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
            rest = &rest[8..];
        }
        if rest.len() >= 4 {
            let mut a = [0u8; 4];
            a.copy_from_slice(&rest[..4]);
            h ^= u64::from(u32::from_le_bytes(a)).wrapping_mul(P1);
            h = h.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
            rest = &rest[4..];
        }
        for &b in rest {
            h ^= u64::from(b).wrapping_mul(P5);
            h = h.rotate_left(11).wrapping_mul(P1);
        }
        h ^= h >> 33;
        h = h.wrapping_mul(P2);
        h ^= h >> 29;
        h = h.wrapping_mul(P3);
        h ^ (h >> 32)
    }
}

/// XXH64 of `data` with `seed`.
pub fn xxh64(data: &[u8], seed: u64) -> u64 {
    let mut h = Xxh64::new(seed);
    h.update(data);
    h.digest()
}
