//! Text ⇄ token ids, built either from a GGUF file's `tokenizer.ggml.*` metadata or from a
//! Hugging Face model directory (`tokenizer.json` + `tokenizer_config.json`).
//!
//! The GGUF path rebuilds llama.cpp's byte-level BPE tokenizer on top of the `tokenizers` crate:
//! the pre-tokenizer regexes are the ones llama.cpp's `llama-vocab.cpp` uses for each
//! `tokenizer.ggml.pre` value (see [`pre_tokenizer_regexes`]), applied one after the other as
//! isolating splits, followed by the GPT-2 byte-to-unicode mapping and the BPE merges. Control and
//! user-defined tokens are recognised anywhere in the input text, as llama.cpp does with
//! `parse_special = true`.
//!
//! Decoding is exact at the byte level: every token id maps to the bytes it stands for, so
//! [`StreamDecoder`] can emit text as soon as it forms complete UTF-8 characters.

mod gguf;
mod hf;
mod stream;

pub use gguf::pre_tokenizer_regexes;
pub use stream::StreamDecoder;
pub use vspec_core::vspecfile::TokenizerParts;

use std::borrow::Cow;
use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use tokenizers::DecoderWrapper;

/// Texts that mark the end of a generation turn; llama.cpp adds any vocabulary token spelled like
/// one of these to its end-of-generation set, whatever the metadata says.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
];

/// GPT-2's reversible byte → printable-char table (`bytes_to_unicode`).
fn byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
        table[b as usize] = if printable {
            char::from(b)
        } else {
            n += 1;
            char::from_u32(255 + n).expect("256..=323 are chars")
        };
    }
    table
}

/// The inverse of [`byte_to_char`].
fn char_to_byte() -> HashMap<char, u8> {
    byte_to_char()
        .iter()
        .enumerate()
        .map(|(b, &c)| (c, b as u8))
        .collect()
}

/// The bytes a byte-level vocabulary entry stands for; an entry with a char outside the table
/// (only added tokens have those) is taken as raw text, as `tokenizers`' ByteLevel decoder does.
fn byte_level_bytes(token: &str, map: &HashMap<char, u8>) -> Vec<u8> {
    token
        .chars()
        .map(|c| map.get(&c).copied())
        .collect::<Option<Vec<u8>>>()
        .unwrap_or_else(|| token.as_bytes().to_vec())
}

/// A tokenizer: encodes text to ids and decodes ids to text, with the model's special tokens and
/// chat template.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The exact bytes of each id, when the vocabulary is byte-level.
    token_bytes: Option<Vec<Vec<u8>>>,
    /// Control/special token flags, by id.
    special: Vec<bool>,
    /// The token strings of the special ids (BOS, EOS), as the vocabulary spells them.
    bos: Option<(u32, String)>,
    eos: Option<(u32, String)>,
    eos_ids: Vec<u32>,
    add_bos: bool,
    chat_template: Option<String>,
    vocab_size: usize,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("eos_ids", &self.eos_ids)
            .field("add_bos", &self.add_bos)
            .field("byte_level", &self.token_bytes.is_some())
            .finish()
    }
}

impl Tokenizer {
    /// Encodes `text`. Special and added tokens written in the text (`<|im_start|>`) become
    /// their ids, as llama.cpp does with `parse_special = true`. With `add_bos`, the BOS id is
    /// put first, but only if the model asks for it (`add_bos_token`) and has one.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| anyhow!("tokenizing {} bytes of text failed: {e}", text.len()))?;
        let ids = enc.get_ids();
        let mut out = Vec::with_capacity(ids.len() + 1);
        if add_bos && self.add_bos {
            if let Some((bos, _)) = &self.bos {
                out.push(*bos);
            }
        }
        out.extend_from_slice(ids);
        Ok(out)
    }

    /// Decodes ids to text, special tokens included verbatim. Invalid UTF-8 (a sequence cut in
    /// the middle of a character) becomes U+FFFD; ids outside the vocabulary are skipped.
    pub fn decode(&self, ids: &[u32]) -> String {
        match &self.token_bytes {
            Some(table) => {
                let bytes: Vec<u8> = ids
                    .iter()
                    .filter_map(|&id| table.get(id as usize))
                    .flatten()
                    .copied()
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            None => self.inner.decode(ids, false).unwrap_or_default(),
        }
    }

    /// The BOS id, if the model has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos.as_ref().map(|b| b.0)
    }

    /// Ids that end a generation: EOS first, then end-of-turn tokens (EOT, EOM, and tokens
    /// spelled `<|im_end|>`, `<|eot_id|>`, `<|endoftext|>`, ... as llama.cpp collects them).
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// Number of token ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Whether the model wants BOS at the start of a prompt (`add_bos_token`).
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether `id` is a control/special token (`<|im_start|>`), as opposed to text.
    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// The text of one token (lossy where the token is part of a UTF-8 character); `None` for
    /// an id outside the vocabulary.
    pub fn token_str(&self, id: u32) -> Option<String> {
        match &self.token_bytes {
            Some(table) => table
                .get(id as usize)
                .map(|b| String::from_utf8_lossy(b).into_owned()),
            None => {
                if id as usize >= self.vocab_size {
                    return None;
                }
                self.inner.decode(&[id], false).ok()
            }
        }
    }

    /// The exact bytes one token stands for (part of a UTF-8 character, possibly). Exact for
    /// byte-level vocabularies; otherwise the token's decoded text. `None` outside the vocabulary.
    pub fn token_bytes(&self, id: u32) -> Option<Cow<'_, [u8]>> {
        match &self.token_bytes {
            Some(table) => table.get(id as usize).map(|b| Cow::Borrowed(b.as_slice())),
            None => self.token_str(id).map(|s| Cow::Owned(s.into_bytes())),
        }
    }

    /// The BOS token's text (`<|im_start|>`, `<s>`), for chat templates.
    pub fn bos_token(&self) -> Option<String> {
        self.bos.as_ref().map(|b| b.1.clone())
    }

    /// The EOS token's text (`<|im_end|>`, `</s>`), for chat templates.
    pub fn eos_token(&self) -> Option<String> {
        self.eos.as_ref().map(|e| e.1.clone())
    }

    /// The model's Jinja chat template source, if it ships one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The underlying `tokenizers` pipeline.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// The exact bytes of every id when the pipeline decodes byte-level (added tokens: their text;
/// others: the GPT-2 byte mapping of the vocabulary entry); `None` for other decoders.
fn derive_token_bytes(inner: &tokenizers::Tokenizer, vocab_size: usize) -> Option<Vec<Vec<u8>>> {
    match inner.get_decoder() {
        Some(DecoderWrapper::ByteLevel(_)) => {
            let map = char_to_byte();
            let added = inner.get_added_tokens_decoder();
            Some(
                (0..vocab_size as u32)
                    .map(|id| match added.get(&id) {
                        Some(t) => t.content.as_bytes().to_vec(),
                        None => inner
                            .id_to_token(id)
                            .map(|s| byte_level_bytes(&s, &map))
                            .unwrap_or_default(),
                    })
                    .collect(),
            )
        }
        _ => None,
    }
}

impl Tokenizer {
    /// Everything needed to rebuild this tokenizer with [`Tokenizer::from_parts`] (what a
    /// `.vspec` file stores): the pipeline as `tokenizers` JSON, the special ids and flags, the
    /// chat template, and the exact bytes of any id the pipeline alone would decode differently.
    pub fn to_parts(&self) -> Result<TokenizerParts> {
        let json = self
            .inner
            .to_string(false)
            .map_err(|e| anyhow!("serializing the tokenizer pipeline failed: {e}"))?;
        let vocab_size = u32::try_from(self.vocab_size)
            .map_err(|_| anyhow!("vocabulary of {} tokens is too large", self.vocab_size))?;
        let special_ids = (0..vocab_size).filter(|&id| self.is_special(id)).collect();
        let mut token_bytes = Vec::new();
        if let Some(table) = &self.token_bytes {
            let derived = derive_token_bytes(&self.inner, self.vocab_size).unwrap_or_default();
            for (id, bytes) in table.iter().enumerate() {
                if derived.get(id) != Some(bytes) {
                    token_bytes.push((id as u32, bytes.clone()));
                }
            }
        }
        Ok(TokenizerParts {
            json,
            vocab_size,
            bos_id: self.bos.as_ref().map(|b| b.0),
            bos_token: self.bos.as_ref().map(|b| b.1.clone()),
            eos_id: self.eos.as_ref().map(|e| e.0),
            eos_token: self.eos.as_ref().map(|e| e.1.clone()),
            eos_ids: self.eos_ids.clone(),
            add_bos: self.add_bos,
            chat_template: self.chat_template.clone(),
            byte_level: self.token_bytes.is_some(),
            special_ids,
            token_bytes,
        })
    }

    /// Rebuilds a tokenizer from [`Tokenizer::to_parts`]'s output (as read from a `.vspec`
    /// file); it encodes and decodes exactly as the original.
    pub fn from_parts(parts: &TokenizerParts) -> Result<Tokenizer> {
        parts.validate().map_err(|e| anyhow!("{e}"))?;
        let inner: tokenizers::Tokenizer = parts.json.parse().map_err(|e| {
            anyhow!("tokenizer.json: the stored tokenizer pipeline does not load: {e}")
        })?;
        let vocab_size = parts.vocab_size as usize;
        let token_bytes = if parts.byte_level {
            let mut table = derive_token_bytes(&inner, vocab_size).unwrap_or_else(|| {
                (0..vocab_size as u32)
                    .map(|id| {
                        inner
                            .id_to_token(id)
                            .map(String::into_bytes)
                            .unwrap_or_default()
                    })
                    .collect()
            });
            for (id, bytes) in &parts.token_bytes {
                if let Some(slot) = table.get_mut(*id as usize) {
                    *slot = bytes.clone();
                }
            }
            Some(table)
        } else {
            None
        };
        let mut special = vec![false; vocab_size];
        for &id in &parts.special_ids {
            if let Some(s) = special.get_mut(id as usize) {
                *s = true;
            }
        }
        let pair =
            |id: Option<u32>, text: &Option<String>, what: &str| -> Result<Option<(u32, String)>> {
                match (id, text) {
                    (None, _) => Ok(None),
                    (Some(id), Some(t)) => Ok(Some((id, t.clone()))),
                    (Some(id), None) => match inner.id_to_token(id) {
                        Some(t) => Ok(Some((id, t))),
                        None => bail!("tokenizer: {what} id {id} has no token text"),
                    },
                }
            };
        Ok(Tokenizer {
            bos: pair(parts.bos_id, &parts.bos_token, "bos")?,
            eos: pair(parts.eos_id, &parts.eos_token, "eos")?,
            inner,
            token_bytes,
            special,
            eos_ids: parts.eos_ids.clone(),
            add_bos: parts.add_bos,
            chat_template: parts.chat_template.clone(),
            vocab_size,
        })
    }
}

fn push_unique(v: &mut Vec<u32>, id: u32) {
    if !v.contains(&id) {
        v.push(id);
    }
}
