//! Building a tokenizer from a GGUF file's `tokenizer.ggml.*` metadata: llama.cpp's byte-level
//! BPE, rebuilt on the `tokenizers` crate.

use anyhow::{anyhow, bail, Result};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, DecoderWrapper, PreTokenizerWrapper, SplitDelimiterBehavior};
use vspec_core::gguf::{Gguf, MetaValue};

use super::{byte_level_bytes, char_to_byte, push_unique, Tokenizer, EOG_TEXTS};

/// GGUF token type of an ordinary vocabulary entry.
const TYPE_NORMAL: i64 = 1;
/// GGUF token type of a control token (`<|im_start|>`, `<|endoftext|>`, ...).
const TYPE_CONTROL: i64 = 3;
/// GGUF token type of a user-defined added token.
const TYPE_USER_DEFINED: i64 = 4;

/// The GPT-2 split regex (`'s|'t|... ?\p{L}+| ?\p{N}+|...`), as llama.cpp spells it.
const RE_GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// Llama 3's split regex (numbers in groups of up to three), llama.cpp's case-folded spelling.
const RE_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2's split regex (like Llama 3's but single digits).
const RE_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The split regexes llama.cpp (`src/llama-vocab.cpp`, `llm_tokenizer_bpe`) applies for a
/// `tokenizer.ggml.pre` value, in order, and whether that pre-tokenizer type ignores merges for
/// words already in the vocabulary and adds BOS by default. `None` for names we do not support.
///
/// - `default` (and a missing key): `[\p{P}\$\+<=>\^~\|]+`, the GPT-2 regex, `\p{N}+`,
///   `[0-9][0-9][0-9]`;
/// - `gpt2`/`gpt-2`, `mpt`, `olmo`, `jais`, `phi-2`, `roberta-bpe`: the GPT-2 regex;
/// - `llama3`/`llama-v3`/`llama-bpe`, `dbrx`, `smaug-bpe`: the Llama 3 regex (ignore merges, BOS);
/// - `smollm`, `starcoder`, `refact`, `command-r`, `codeshell`, `exaone`: `\p{N}` then GPT-2;
/// - `qwen2`, `stablelm2`, `deepseek-r1-qwen`: the Qwen 2 regex.
pub fn pre_tokenizer_regexes(pre: &str) -> Option<(Vec<&'static str>, bool, bool)> {
    Some(match pre {
        "default" => (
            vec![
                r"[\p{P}\$\+<=>\^~\|]+",
                RE_GPT2,
                r"\p{N}+",
                "[0-9][0-9][0-9]",
            ],
            false,
            false,
        ),
        "gpt2" | "gpt-2" | "mpt" | "olmo" | "jais" | "phi-2" | "roberta-bpe" => {
            (vec![RE_GPT2], false, false)
        }
        "llama3" | "llama-v3" | "llama-bpe" | "dbrx" | "smaug-bpe" => (vec![RE_LLAMA3], true, true),
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" => {
            (vec![r"\p{N}", RE_GPT2], false, false)
        }
        "qwen2" | "stablelm2" | "deepseek-r1-qwen" => (vec![RE_QWEN2], false, false),
        _ => return None,
    })
}

/// A metadata value as an integer, whatever its integer width.
fn meta_int(v: &MetaValue) -> Option<i64> {
    Some(match *v {
        MetaValue::U8(x) => x.into(),
        MetaValue::I8(x) => x.into(),
        MetaValue::U16(x) => x.into(),
        MetaValue::I16(x) => x.into(),
        MetaValue::U32(x) => x.into(),
        MetaValue::I32(x) => x.into(),
        MetaValue::U64(x) => i64::try_from(x).ok()?,
        MetaValue::I64(x) => x,
        _ => return None,
    })
}

/// Typed reads of GGUF metadata that name the key in every error.
struct Meta<'a>(&'a Gguf);

impl<'a> Meta<'a> {
    fn str_opt(&self, key: &str) -> Result<Option<&'a str>> {
        match self.0.get(key) {
            None => Ok(None),
            Some(MetaValue::Str(s)) => Ok(Some(s.as_str())),
            Some(v) => bail!("GGUF metadata {key}: expected a string, found {v:?}"),
        }
    }
    fn str(&self, key: &str) -> Result<&'a str> {
        self.str_opt(key)?
            .ok_or_else(|| anyhow!("GGUF metadata {key} is missing"))
    }
    fn bool_opt(&self, key: &str) -> Result<Option<bool>> {
        match self.0.get(key) {
            None => Ok(None),
            Some(MetaValue::Bool(b)) => Ok(Some(*b)),
            Some(v) => match meta_int(v) {
                Some(i) => Ok(Some(i != 0)),
                None => bail!("GGUF metadata {key}: expected a bool, found {v:?}"),
            },
        }
    }
    fn id_opt(&self, key: &str, vocab: usize) -> Result<Option<u32>> {
        let Some(v) = self.0.get(key) else {
            return Ok(None);
        };
        let i = meta_int(v)
            .ok_or_else(|| anyhow!("GGUF metadata {key}: expected a token id, found {v:?}"))?;
        if i < 0 {
            return Ok(None); // llama.cpp writes -1 for "none"
        }
        if i as u64 >= vocab as u64 {
            bail!("GGUF metadata {key} = {i} is outside the vocabulary of {vocab} tokens");
        }
        Ok(Some(i as u32))
    }
    fn array(&self, key: &str) -> Result<Option<&'a [MetaValue]>> {
        match self.0.get(key) {
            None => Ok(None),
            Some(MetaValue::Array(a)) => Ok(Some(a.as_slice())),
            Some(v) => bail!("GGUF metadata {key}: expected an array, found {v:?}"),
        }
    }
    fn str_array(&self, key: &str) -> Result<Vec<&'a str>> {
        let a = self
            .array(key)?
            .ok_or_else(|| anyhow!("GGUF metadata {key} is missing"))?;
        a.iter()
            .enumerate()
            .map(|(i, v)| match v {
                MetaValue::Str(s) => Ok(s.as_str()),
                v => bail!("GGUF metadata {key}[{i}]: expected a string, found {v:?}"),
            })
            .collect()
    }
    fn int_array_opt(&self, key: &str) -> Result<Option<Vec<i64>>> {
        let Some(a) = self.array(key)? else {
            return Ok(None);
        };
        a.iter()
            .enumerate()
            .map(|(i, v)| {
                meta_int(v).ok_or_else(|| {
                    anyhow!("GGUF metadata {key}[{i}]: expected an integer, found {v:?}")
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }
}

impl Tokenizer {
    /// Builds the tokenizer a GGUF file describes in its `tokenizer.ggml.*` metadata.
    ///
    /// Supports `tokenizer.ggml.model = "gpt2"` (byte-level BPE) with the pre-tokenizers listed
    /// in [`pre_tokenizer_regexes`]; any other model or pre-tokenizer is an error naming the key
    /// and its value.
    pub fn from_gguf(g: &Gguf) -> Result<Tokenizer> {
        let m = Meta(g);
        let model = m.str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            bail!(
                "unsupported tokenizer: GGUF metadata tokenizer.ggml.model = {model:?} \
                 (only \"gpt2\", byte-level BPE, is supported)"
            );
        }
        let pre = m.str_opt("tokenizer.ggml.pre")?.unwrap_or("default");
        let (regexes, ignore_merges, default_add_bos) =
            pre_tokenizer_regexes(pre).ok_or_else(|| {
                anyhow!(
                    "unsupported pre-tokenizer: GGUF metadata tokenizer.ggml.pre = {pre:?} \
                     (supported: default, gpt2, llama3/llama-bpe, smollm, qwen2 and their aliases)"
                )
            })?;

        let tokens = m.str_array("tokenizer.ggml.tokens")?;
        let n = tokens.len();
        if n == 0 || n > u32::MAX as usize {
            bail!("GGUF metadata tokenizer.ggml.tokens has {n} entries");
        }
        let types = match m.int_array_opt("tokenizer.ggml.token_type")? {
            Some(t) if t.len() != n => bail!(
                "GGUF metadata tokenizer.ggml.token_type has {} entries but tokenizer.ggml.tokens has {n}",
                t.len()
            ),
            Some(t) => t,
            None => vec![TYPE_NORMAL; n],
        };
        let merges = m
            .str_array("tokenizer.ggml.merges")?
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                s.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| {
                        anyhow!("GGUF metadata tokenizer.ggml.merges[{i}] = {s:?} is not \"a b\"")
                    })
            })
            .collect::<Result<Vec<_>>>()?;

        // Later duplicates win, as in llama.cpp's token_to_id map.
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .byte_fallback(false)
            .ignore_merges(ignore_merges)
            .build()
            .map_err(|e| anyhow!("GGUF tokenizer: building the BPE model failed: {e}"))?;

        let mut pieces = Vec::with_capacity(regexes.len() + 1);
        for re in &regexes {
            let split = Split::new(
                SplitPattern::Regex(re.to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| anyhow!("pre-tokenizer regex {re:?} does not compile: {e}"))?;
            pieces.push(PreTokenizerWrapper::Split(split));
        }
        pieces.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
            false, false, false,
        )));

        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(Sequence::new(pieces))));
        inner.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevelDecoder::default())));
        let added: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, &t)| t == TYPE_CONTROL || t == TYPE_USER_DEFINED)
            .map(|(s, &t)| AddedToken::from(s.to_string(), t == TYPE_CONTROL).normalized(false))
            .collect();
        inner.add_special_tokens(&added);

        let map = char_to_byte();
        let token_bytes = tokens
            .iter()
            .zip(&types)
            .map(|(s, &t)| {
                if t == TYPE_CONTROL || t == TYPE_USER_DEFINED {
                    s.as_bytes().to_vec()
                } else {
                    byte_level_bytes(s, &map)
                }
            })
            .collect();
        let special: Vec<bool> = types.iter().map(|&t| t == TYPE_CONTROL).collect();

        let bos = m.id_opt("tokenizer.ggml.bos_token_id", n)?;
        let eos = m.id_opt("tokenizer.ggml.eos_token_id", n)?;
        let mut eos_ids = Vec::new();
        for key in [
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
        ] {
            if let Some(id) = m.id_opt(key, n)? {
                push_unique(&mut eos_ids, id);
            }
        }
        for (i, t) in tokens.iter().enumerate() {
            if EOG_TEXTS.contains(t) {
                push_unique(&mut eos_ids, i as u32);
            }
        }
        let add_bos = m
            .bool_opt("tokenizer.ggml.add_bos_token")?
            .unwrap_or(default_add_bos);
        let name = |id: u32| (id, tokens[id as usize].to_string());
        Ok(Tokenizer {
            inner,
            token_bytes: Some(token_bytes),
            special,
            bos: bos.map(name),
            eos: eos.map(name),
            eos_ids,
            add_bos,
            chat_template: m.str_opt("tokenizer.chat_template")?.map(str::to_string),
            vocab_size: n,
        })
    }
}
