//! Vspec's own packed formats: asymmetric 2, 3 and 4-bit quants in groups of 64.
//!
//! llama.cpp's k-quants need rows that are multiples of 256, but small models have rows of 576
//! or 1536 (SmolLM2-135M), so these formats use 64-weight blocks: every row length that is a
//! multiple of 64 works. Each block is `x̂ = d·q + m` with an f16 scale `d`, an f16 min `m` and
//! `b`-bit quants `q ∈ 0..2^b`, laid out so that a SIMD kernel unpacks 32 or 16 consecutive
//! elements with one shift and one mask:
//!
//! | format | bytes | bits per weight | layout of the quants after `d`, `m` (bytes 0..4) |
//! |--------|-------|-----------------|--------------------------------------------------|
//! | [`vq2`] | 20   | 2.5             | 16 bytes, 2-bit fields                             |
//! | [`vq3`] | 28   | 3.5             | 16 bytes of low 2 bits + 8 bytes of high bits      |
//! | [`vq4`] | 36   | 4.5             | 32 bytes of nibbles                               |
//!
//! Each file defines the exact bit layout, decoder, quantizer (the weighted search of
//! [`super::search::fit_affine`]), and scalar reference dot products against f32 and against 8-bit
//! activations ([`super::act_q8`]). Conventions are those of [`super::gguf`]: unaligned byte
//! slices, little-endian fields, decoders that never panic on any bytes.

pub mod vq2;
pub mod vq3;
pub mod vq4;
