//! [`FormatSpec`]: everything the runtime knows about one weight format, in one value.
//!
//! Each format's `SPEC` constant lives in the file that defines the format
//! (`quant/gguf/q4_0.rs`, `quant/vspec/tq3.rs`, the three floats in `quant/gguf/float.rs`), next
//! to the layout it describes. [`Format::spec`] is the one exhaustive `match` over the formats;
//! everything else (sizes, names, ggml ids, decoders, dots, quantizers, GPTQ hooks) reads the spec,
//! so adding a format is one new file, one enum variant and one match arm, and a capability a
//! format lacks is an explicit `None` in its spec rather than a forgotten arm.

use super::Format;
use crate::quant::gptq::GptqCode;
use crate::quant::{BlockDecoder, BlockDotF32, BlockDotQ8, BlockQuantizer};

/// The static description of one weight format.
#[derive(Clone, Copy)]
pub struct FormatSpec {
    /// The format described.
    pub format: Format,
    /// Human name, as llama.cpp prints it (`"Q4_K"`); also the name the CLI and recipes accept.
    pub name: &'static str,
    /// Weights per block.
    pub block_elems: usize,
    /// Bytes per block.
    pub block_bytes: usize,
    /// The ggml type id; `None` for Vspec's own formats, which GGUF cannot hold.
    pub ggml_type: Option<u32>,
    /// The scalar reference decoder of one block.
    pub decode: BlockDecoder,
    /// The scalar reference dot of one block with f32 values.
    pub dot_f32: Option<BlockDotF32>,
    /// The scalar reference dot of one block with 8-bit activation blocks.
    pub dot_q8: Option<BlockDotQ8>,
    /// The weighted block quantizer (`x`, importance `w`, output block); `None` for formats
    /// [`crate::quant::quantize_row`] cannot produce.
    pub quantize: Option<BlockQuantizer>,
    /// How the GPTQ walk rounds a block of this format element by element; `None` keeps the
    /// quants the block search chose (and skips the scale refit).
    pub gptq: Option<GptqCode>,
}

impl core::fmt::Debug for FormatSpec {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // The function pointers print as addresses, which say nothing; show what they are for.
        f.debug_struct("FormatSpec")
            .field("format", &self.format)
            .field("block_elems", &self.block_elems)
            .field("block_bytes", &self.block_bytes)
            .field("ggml_type", &self.ggml_type)
            .field("dot_f32", &self.dot_f32.is_some())
            .field("dot_q8", &self.dot_q8.is_some())
            .field("quantize", &self.quantize.is_some())
            .field("gptq", &self.gptq.map(|g| g.kind()))
            .finish()
    }
}
