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

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, DecoderWrapper, PreTokenizerWrapper, SplitDelimiterBehavior};
use vspec_core::gguf::{Gguf, MetaValue};
pub use vspec_core::vspecfile::TokenizerParts;

/// GGUF token type of an ordinary vocabulary entry.
const TYPE_NORMAL: i64 = 1;
/// GGUF token type of a control token (`<|im_start|>`, `<|endoftext|>`, ...).
const TYPE_CONTROL: i64 = 3;
/// GGUF token type of a user-defined added token.
const TYPE_USER_DEFINED: i64 = 4;

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

    /// Loads a Hugging Face tokenizer directory: `tokenizer.json` (required), with BOS/EOS,
    /// `add_bos_token` and the chat template from `tokenizer_config.json` (or
    /// `chat_template.jinja`), falling back to the ids in `config.json` and
    /// `generation_config.json`.
    pub fn from_hf_dir(dir: &Path) -> Result<Tokenizer> {
        let tj = dir.join("tokenizer.json");
        if !tj.is_file() {
            bail!(
                "missing {}: a Hugging Face model directory needs tokenizer.json",
                tj.display()
            );
        }
        let inner = tokenizers::Tokenizer::from_file(&tj)
            .map_err(|e| anyhow!("reading {}: {e}", tj.display()))?;
        let read_json = |name: &str| -> Result<Option<serde_json::Value>> {
            let p = dir.join(name);
            if !p.is_file() {
                return Ok(None);
            }
            let text =
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_str(&text)
                .map(Some)
                .with_context(|| format!("parsing {}", p.display()))
        };
        let tcfg = read_json("tokenizer_config.json")?.unwrap_or_default();
        let cfg = read_json("config.json")?.unwrap_or_default();
        let gen = read_json("generation_config.json")?.unwrap_or_default();

        let vocab_size = inner.get_vocab_size(true);
        let added = inner.get_added_tokens_decoder();
        let mut special = vec![false; vocab_size];
        for (&id, tok) in &added {
            if tok.special {
                if let Some(s) = special.get_mut(id as usize) {
                    *s = true;
                }
            }
        }

        let token_text = |v: &serde_json::Value| -> Option<String> {
            match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
                _ => None,
            }
        };
        let ids_of = |v: Option<&serde_json::Value>| -> Vec<u32> {
            match v {
                Some(serde_json::Value::Number(n)) => {
                    n.as_u64().map(|x| x as u32).into_iter().collect()
                }
                Some(serde_json::Value::Array(a)) => a
                    .iter()
                    .filter_map(|x| x.as_u64().map(|x| x as u32))
                    .collect(),
                _ => Vec::new(),
            }
        };
        let resolve = |key: &str, id_key: &str| -> Option<(u32, String)> {
            if let Some(text) = tcfg.get(key).and_then(token_text) {
                if let Some(id) = inner.token_to_id(&text) {
                    return Some((id, text));
                }
            }
            let id = ids_of(cfg.get(id_key))
                .into_iter()
                .chain(ids_of(gen.get(id_key)))
                .next()?;
            Some((id, inner.id_to_token(id)?))
        };
        let bos = resolve("bos_token", "bos_token_id");
        let eos = resolve("eos_token", "eos_token_id");

        let mut eos_ids = Vec::new();
        if let Some((id, _)) = &eos {
            push_unique(&mut eos_ids, *id);
        }
        for id in ids_of(cfg.get("eos_token_id"))
            .into_iter()
            .chain(ids_of(gen.get("eos_token_id")))
        {
            push_unique(&mut eos_ids, id);
        }
        let mut added_ids: Vec<_> = added.iter().collect();
        added_ids.sort_by_key(|(id, _)| **id);
        for (&id, tok) in added_ids {
            if EOG_TEXTS.contains(&tok.content.as_str()) {
                push_unique(&mut eos_ids, id);
            }
        }

        let add_bos = match tcfg.get("add_bos_token").and_then(|v| v.as_bool()) {
            Some(b) => b,
            // No explicit flag: the post-processor decides (Llama 3 style TemplateProcessing).
            None => match (&bos, inner.encode_fast("", true)) {
                (Some((bos_id, _)), Ok(enc)) => enc.get_ids().first() == Some(bos_id),
                _ => false,
            },
        };

        let chat_template = {
            let jinja = dir.join("chat_template.jinja");
            if jinja.is_file() {
                Some(
                    std::fs::read_to_string(&jinja)
                        .with_context(|| format!("reading {}", jinja.display()))?,
                )
            } else {
                match tcfg.get("chat_template") {
                    Some(serde_json::Value::String(s)) => Some(s.clone()),
                    // A list of named templates: take "default", else the first.
                    Some(serde_json::Value::Array(list)) => {
                        let named = |n: &str| {
                            list.iter()
                                .find(|t| t.get("name").and_then(|x| x.as_str()) == Some(n))
                        };
                        named("default")
                            .or_else(|| list.first())
                            .and_then(|t| t.get("template"))
                            .and_then(|t| t.as_str())
                            .map(str::to_string)
                    }
                    _ => None,
                }
            }
        };

        let token_bytes = derive_token_bytes(&inner, vocab_size);

        Ok(Tokenizer {
            inner,
            token_bytes,
            special,
            bos,
            eos,
            eos_ids,
            add_bos,
            chat_template,
            vocab_size,
        })
    }

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

/// Streams text as tokens arrive, emitting only complete UTF-8 (a token may end mid-character).
pub struct StreamDecoder<'t> {
    tok: &'t Tokenizer,
    /// Byte-level path: bytes not yet emitted (an incomplete character).
    pending: Vec<u8>,
    /// Generic path: ids seen, and the window that is re-decoded on each push.
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
}

impl<'t> StreamDecoder<'t> {
    /// A decoder with nothing pending.
    pub fn new(tok: &'t Tokenizer) -> Self {
        StreamDecoder {
            tok,
            pending: Vec::new(),
            ids: Vec::new(),
            prefix: 0,
            read: 0,
        }
    }

    /// Adds one token; returns the text that became complete, if any.
    pub fn push(&mut self, id: u32) -> Option<String> {
        match &self.tok.token_bytes {
            Some(table) => {
                self.pending
                    .extend_from_slice(table.get(id as usize).map_or(&[][..], |b| b));
                let mut out = String::new();
                loop {
                    match std::str::from_utf8(&self.pending) {
                        Ok(s) => {
                            out.push_str(s);
                            self.pending.clear();
                            break;
                        }
                        Err(e) => {
                            let ok = e.valid_up_to();
                            out.push_str(
                                std::str::from_utf8(&self.pending[..ok]).expect("valid prefix"),
                            );
                            match e.error_len() {
                                // Incomplete character at the end: keep it for the next token.
                                None => {
                                    self.pending.drain(..ok);
                                    break;
                                }
                                // Bytes that can never become valid.
                                Some(bad) => {
                                    out.push(char::REPLACEMENT_CHARACTER);
                                    self.pending.drain(..ok + bad);
                                }
                            }
                        }
                    }
                }
                (!out.is_empty()).then_some(out)
            }
            None => {
                self.ids.push(id);
                let before = self.tok.decode(&self.ids[self.prefix..self.read]);
                let now = self.tok.decode(&self.ids[self.prefix..]);
                if now.len() > before.len() && !now.ends_with(char::REPLACEMENT_CHARACTER) {
                    let text = now.get(before.len()..).unwrap_or(&now).to_string();
                    self.prefix = self.read;
                    self.read = self.ids.len();
                    Some(text)
                } else {
                    None
                }
            }
        }
    }

    /// Emits whatever is still pending (an incomplete character becomes U+FFFD) and resets.
    pub fn flush(&mut self) -> Option<String> {
        let out = match &self.tok.token_bytes {
            Some(_) => String::from_utf8_lossy(&self.pending).into_owned(),
            None => {
                let before = self.tok.decode(&self.ids[self.prefix..self.read]);
                let now = self.tok.decode(&self.ids[self.prefix..]);
                now.get(before.len()..).unwrap_or_default().to_string()
            }
        };
        self.pending.clear();
        self.ids.clear();
        self.prefix = 0;
        self.read = 0;
        (!out.is_empty()).then_some(out)
    }
}
