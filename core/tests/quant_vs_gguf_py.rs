//! Our block decoders (and the 32-weight reference quantizers) against gguf-py, an independent
//! numpy implementation of the ggml formats.
//!
//! Fixtures: `core/tests/fixtures/quant/*.bin`, made by `make_quant_fixtures.py` in that folder
//! (gguf 0.19.0, numpy 2.4.6; the file layout is described there). Every comparison is bit-exact:
//! both sides do the same f32 operations in the same order (ggml's order), and numpy does not fuse
//! multiply-adds. The one allowed difference is the NaN payload of F16 signalling NaNs: `half`
//! (like F16C hardware and ggml) sets the quiet bit where numpy may not; both are NaN.

use std::path::PathBuf;

use vspec_core::quant::gguf::{q4_0, q4_1, q5_0, q5_1, q8_0};
use vspec_core::quant::{block_decoder, dequantize_row};
use vspec_core::Format;

fn fixture(name: &str) -> Vec<u8> {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "fixtures",
        "quant",
        name,
    ]
    .iter()
    .collect();
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

struct Fixture {
    format: Format,
    n_blocks: usize,
    /// Payload after the 24-byte header.
    body: Vec<u8>,
}

fn load(name: &str, magic: &[u8; 4]) -> Fixture {
    let bytes = fixture(name);
    assert_eq!(&bytes[..4], magic, "{name}: magic");
    let word =
        |k: usize| u32::from_le_bytes(bytes[4 + 4 * k..8 + 4 * k].try_into().unwrap()) as usize;
    assert_eq!(word(0), 1, "{name}: version");
    let format = Format::from_ggml_type(word(1) as u32).expect("known ggml type");
    let (n_blocks, bb, be) = (word(2), word(3), word(4));
    assert_eq!(
        (bb, be),
        (format.block_bytes(), format.block_elems()),
        "{name}: sizes"
    );
    let body = bytes[24..].to_vec();
    assert_eq!(body.len(), n_blocks * (bb + 4 * be), "{name}: length");
    Fixture {
        format,
        n_blocks,
        body,
    }
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn dequantize_matches_gguf_py_bit_exactly() {
    // Only the GGUF formats have gguf-py fixtures; Vspec's own (VQ2/3/4) are tested in quant::vspec.
    for format in Format::ALL.into_iter().filter(|f| f.ggml_type().is_some()) {
        let name = format!("{}.deq.bin", format.name());
        let fx = load(&name, b"VQDQ");
        assert_eq!(fx.format, format);
        let (bb, be) = (format.block_bytes(), format.block_elems());
        let raw = &fx.body[..fx.n_blocks * bb];
        let want = f32s(&fx.body[fx.n_blocks * bb..]);
        let mut got = vec![0f32; fx.n_blocks * be];
        dequantize_row(format, raw, &mut got).unwrap();
        let mut nan_payload_diffs = 0;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            if g.to_bits() == w.to_bits() {
                continue;
            }
            if format == Format::F16 && g.is_nan() && w.is_nan() {
                nan_payload_diffs += 1;
                continue;
            }
            panic!(
                "{}: block {} element {}: ours {g:e} ({:#010x}), gguf-py {w:e} ({:#010x})",
                format.name(),
                i / be,
                i % be,
                g.to_bits(),
                w.to_bits()
            );
        }
        // Block by block through the table gives the same result as the row decoder.
        let decode = block_decoder(format);
        let mut one = vec![0f32; be];
        for (b, blk) in raw.chunks_exact(bb).enumerate() {
            decode(blk, &mut one);
            assert!(one
                .iter()
                .zip(&got[b * be..])
                .all(|(x, y)| x.to_bits() == y.to_bits()));
        }
        println!(
            "{}: {} blocks bit-exact ({} NaNs that differ only in payload)",
            format.name(),
            fx.n_blocks,
            nan_payload_diffs
        );
    }
}

/// A reference quantizer of one block.
type Quantizer = fn(&[f32], &mut [u8]);

#[test]
fn quantize_matches_gguf_py_bytes() {
    let cases: [(Format, Quantizer); 5] = [
        (Format::Q8_0, q8_0::quantize_block),
        (Format::Q4_0, q4_0::quantize_block),
        (Format::Q4_1, q4_1::quantize_block),
        (Format::Q5_0, q5_0::quantize_block),
        (Format::Q5_1, q5_1::quantize_block),
    ];
    for (format, quantize) in cases {
        let name = format!("{}.q.bin", format.name());
        let fx = load(&name, b"VQQU");
        let (bb, be) = (format.block_bytes(), format.block_elems());
        let x = f32s(&fx.body[..fx.n_blocks * be * 4]);
        let want = &fx.body[fx.n_blocks * be * 4..];
        let mut got = vec![0u8; bb];
        for b in 0..fx.n_blocks {
            quantize(&x[b * be..(b + 1) * be], &mut got);
            assert_eq!(
                got,
                want[b * bb..(b + 1) * bb],
                "{} block {b}",
                format.name()
            );
        }
        println!(
            "{}: {} blocks quantize byte-exact",
            format.name(),
            fx.n_blocks
        );
    }
}
