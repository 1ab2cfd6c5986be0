//! Building a tokenizer from a Hugging Face model directory (`tokenizer.json` and the config
//! files beside it).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use super::{derive_token_bytes, push_unique, Tokenizer, EOG_TEXTS};

impl Tokenizer {
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
}
