//! Tokenizer tests: a synthetic byte-level vocabulary (always runs), the HF-directory loader, and
//! the real SmolLM2-135M-Instruct GGUF against llama.cpp's token ids (when the model is present).

use std::path::{Path, PathBuf};

use vspec_core::gguf::{Gguf, MetaValue};
use vspec_host::tokenizer::{StreamDecoder, Tokenizer};

#[path = "common/smollm2.rs"]
mod smollm2;
use smollm2::smollm2_gguf;

// ---------------------------------------------------------------------------------------------
// Synthetic GGUF metadata

/// GPT-2's byte → char table, written out independently of the code under test.
fn byte_char(b: u8) -> char {
    let mut n = 0u32;
    for x in 0..=255u8 {
        let printable = (33..=126).contains(&x) || (161..=172).contains(&x) || x >= 174;
        if x == b {
            return if printable {
                char::from(x)
            } else {
                char::from_u32(256 + n).unwrap()
            };
        }
        if !printable {
            n += 1;
        }
    }
    unreachable!()
}

fn strs(v: &[String]) -> MetaValue {
    MetaValue::Array(v.iter().map(|s| MetaValue::Str(s.clone())).collect())
}

/// A GGUF whose vocabulary is the 256 bytes, a few merges and two control tokens.
fn synthetic(pre: Option<&str>, model: &str) -> Gguf {
    let mut tokens: Vec<String> = vec![
        "<|endoftext|>".into(),
        "<|im_start|>".into(),
        "<|im_end|>".into(),
    ];
    let mut types = vec![3, 3, 3];
    for b in 0..=255u8 {
        tokens.push(byte_char(b).to_string());
        types.push(1);
    }
    let merges: Vec<String> = [
        "h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "Ġwor l", "Ġworl d", "1 2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for m in &merges {
        tokens.push(m.replace(' ', ""));
        types.push(1);
    }
    let mut metadata = vec![
        (
            "tokenizer.ggml.model".to_string(),
            MetaValue::Str(model.into()),
        ),
        ("tokenizer.ggml.tokens".to_string(), strs(&tokens)),
        (
            "tokenizer.ggml.token_type".to_string(),
            MetaValue::Array(types.into_iter().map(MetaValue::I32).collect()),
        ),
        ("tokenizer.ggml.merges".to_string(), strs(&merges)),
        ("tokenizer.ggml.bos_token_id".to_string(), MetaValue::U32(1)),
        ("tokenizer.ggml.eos_token_id".to_string(), MetaValue::U32(2)),
        (
            "tokenizer.ggml.add_bos_token".to_string(),
            MetaValue::Bool(true),
        ),
        (
            "tokenizer.chat_template".to_string(),
            MetaValue::Str("{{ bos_token }}".into()),
        ),
    ];
    if let Some(p) = pre {
        metadata.push(("tokenizer.ggml.pre".to_string(), MetaValue::Str(p.into())));
    }
    Gguf {
        version: 3,
        alignment: 32,
        metadata,
        tensors: Vec::new(),
        data_offset: 0,
    }
}

fn id_of(tok: &Tokenizer, s: &str) -> u32 {
    (0..tok.vocab_size() as u32)
        .find(|&i| tok.token_str(i).as_deref() == Some(s) && !tok.is_special(i))
        .unwrap_or_else(|| panic!("no token {s:?}"))
}

const ROUND_TRIP: &[&str] = &[
    "",
    "hello world",
    "Hello, world! 123 4567.89",
    "  leading and trailing spaces   ",
    "tabs\tand\nnewlines\r\n\n\nmore",
    "emoji 😀👍🏽 family 👨‍👩‍👧‍👦 flags 🇫🇷",
    "CJK 中文字符 日本語のテキスト 한국어",
    "accents: café déjà vu naïve Ærøskøbing",
    "it's we'll they've I'M",
    "code: fn main() { println!(\"{}\", x[0] + 1); }",
    "<|im_start|>user\nhi<|im_end|>\n",
    "mixed 12345678901234567890 and ١٢٣ arabic digits",
    "\u{0}\u{1}\u{7f} control bytes",
];

#[test]
fn synthetic_vocab_encode_decode() {
    let tok = Tokenizer::from_gguf(&synthetic(Some("smollm"), "gpt2")).unwrap();
    assert_eq!(tok.vocab_size(), 3 + 256 + 10);
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.bos_token().as_deref(), Some("<|im_start|>"));
    assert_eq!(tok.eos_token().as_deref(), Some("<|im_end|>"));
    // EOS first, then `<|endoftext|>` by name (as llama.cpp's EOG set).
    assert_eq!(tok.eos_ids(), &[2, 0]);
    assert!(tok.is_special(1) && !tok.is_special(10));
    assert_eq!(tok.chat_template(), Some("{{ bos_token }}"));

    let hello = id_of(&tok, "hello");
    let world = id_of(&tok, " world");
    assert_eq!(
        tok.encode("hello world", false).unwrap(),
        vec![hello, world]
    );
    assert_eq!(
        tok.encode("hello world", true).unwrap(),
        vec![1, hello, world]
    );
    // Special tokens in text become their ids.
    assert_eq!(
        tok.encode("<|im_start|>hello<|im_end|>", false).unwrap(),
        vec![1, hello, 2]
    );
    // smollm splits digits one by one, so the "1 2" merge never applies.
    let one = id_of(&tok, "1");
    let two = id_of(&tok, "2");
    assert_eq!(tok.encode("12", false).unwrap(), vec![one, two]);
    for s in ROUND_TRIP {
        let ids = tok.encode(s, false).unwrap();
        assert_eq!(tok.decode(&ids), *s, "round trip of {s:?}");
    }
}

#[test]
fn pre_tokenizer_choice_matters() {
    let gpt2 = Tokenizer::from_gguf(&synthetic(Some("gpt2"), "gpt2")).unwrap();
    let twelve = id_of(&gpt2, "12");
    assert_eq!(gpt2.encode("12", false).unwrap(), vec![twelve]);
    // A missing pre key means llama.cpp's "default" regexes.
    let default = Tokenizer::from_gguf(&synthetic(None, "gpt2")).unwrap();
    assert_eq!(default.encode("12", false).unwrap(), vec![twelve]);
    for pre in ["llama-bpe", "qwen2", "default"] {
        let tok = Tokenizer::from_gguf(&synthetic(Some(pre), "gpt2")).unwrap();
        for s in ROUND_TRIP {
            let ids = tok.encode(s, false).unwrap();
            assert_eq!(tok.decode(&ids), *s, "{pre}: round trip of {s:?}");
        }
    }
}

#[test]
fn unsupported_metadata_is_a_clear_error() {
    let e = Tokenizer::from_gguf(&synthetic(Some("smollm"), "bert")).unwrap_err();
    let s = format!("{e:#}");
    assert!(
        s.contains("tokenizer.ggml.model") && s.contains("bert"),
        "{s}"
    );
    let e = Tokenizer::from_gguf(&synthetic(Some("no-such-pre"), "gpt2")).unwrap_err();
    let s = format!("{e:#}");
    assert!(
        s.contains("tokenizer.ggml.pre") && s.contains("no-such-pre"),
        "{s}"
    );
    let mut g = synthetic(Some("gpt2"), "gpt2");
    g.metadata.retain(|(k, _)| k != "tokenizer.ggml.merges");
    let s = format!("{:#}", Tokenizer::from_gguf(&g).unwrap_err());
    assert!(s.contains("tokenizer.ggml.merges"), "{s}");
}

/// Feeds ids one at a time; the pieces must add up to `decode` and each piece is whole UTF-8.
fn check_stream(tok: &Tokenizer, ids: &[u32]) {
    let mut dec = StreamDecoder::new(tok);
    let mut out = String::new();
    for &id in ids {
        if let Some(piece) = dec.push(id) {
            assert!(!piece.contains('\u{FFFD}') || tok.decode(ids).contains('\u{FFFD}'));
            out.push_str(&piece);
        }
    }
    if let Some(rest) = dec.flush() {
        out.push_str(&rest);
    }
    assert_eq!(out, tok.decode(ids));
}

#[test]
fn stream_decoder_emits_whole_characters() {
    let tok = Tokenizer::from_gguf(&synthetic(Some("smollm"), "gpt2")).unwrap();
    // 😀 is four byte tokens: nothing is emitted until the last one.
    let ids = tok.encode("😀", false).unwrap();
    assert_eq!(ids.len(), 4);
    let mut dec = StreamDecoder::new(&tok);
    assert_eq!(dec.push(ids[0]), None);
    assert_eq!(dec.push(ids[1]), None);
    assert_eq!(dec.push(ids[2]), None);
    assert_eq!(dec.push(ids[3]).as_deref(), Some("😀"));
    assert_eq!(dec.flush(), None);
    // A cut character is flushed as U+FFFD.
    assert_eq!(dec.push(ids[0]), None);
    assert_eq!(dec.flush().as_deref(), Some("\u{FFFD}"));
    for s in ROUND_TRIP {
        check_stream(&tok, &tok.encode(s, false).unwrap());
    }
}

// ---------------------------------------------------------------------------------------------
// HF directory

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vspec-tok-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn hf_dir_missing_file_is_named() {
    let d = temp_dir("missing");
    let e = Tokenizer::from_hf_dir(&d).unwrap_err();
    assert!(format!("{e}").contains("tokenizer.json"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn hf_dir_round_trip() {
    // Save the GGUF-built pipeline as tokenizer.json and load it back as an HF directory.
    let tok = Tokenizer::from_gguf(&synthetic(Some("smollm"), "gpt2")).unwrap();
    let d = temp_dir("hf");
    tok.inner().save(d.join("tokenizer.json"), false).unwrap();
    std::fs::write(
        d.join("tokenizer_config.json"),
        r#"{"bos_token": {"content": "<|im_start|>"}, "eos_token": "<|im_end|>",
            "add_bos_token": false, "chat_template": "{{ eos_token }}"}"#,
    )
    .unwrap();
    std::fs::write(d.join("config.json"), r#"{"eos_token_id": [2, 0]}"#).unwrap();
    let hf = Tokenizer::from_hf_dir(&d).unwrap();
    assert_eq!(hf.bos_id(), Some(1));
    assert_eq!(hf.eos_token().as_deref(), Some("<|im_end|>"));
    assert_eq!(hf.eos_ids(), &[2, 0]);
    assert_eq!(hf.chat_template(), Some("{{ eos_token }}"));
    assert!(hf.is_special(1));
    for s in ROUND_TRIP {
        let a = tok.encode(s, false).unwrap();
        assert_eq!(hf.encode(s, true).unwrap(), a, "{s:?}"); // add_bos_token false
        assert_eq!(hf.decode(&a), *s);
        check_stream(&hf, &a);
    }
    let _ = std::fs::remove_dir_all(&d);
}

// ---------------------------------------------------------------------------------------------
// The real model

fn load_smollm2(path: &Path) -> Tokenizer {
    let bytes = std::fs::read(path).unwrap();
    let g = vspec_core::gguf::parse(&bytes).unwrap();
    Tokenizer::from_gguf(&g).unwrap()
}

/// A fixture case: text, llama.cpp's ids, and each id's bytes in hex when the fixture has them.
type Case = (String, Vec<u32>, Option<Vec<String>>);

/// Cases from llama.cpp's fixture (`tests/fixtures/smollm2/tokenize.json`,
/// `{"cases": [{"text", "ids", "pieces_hex"}]}`).
fn fixture_cases() -> Option<Vec<Case>> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/smollm2/tokenize.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).ok()?).unwrap();
    let list = v
        .get("cases")
        .or_else(|| v.get("tests"))
        .unwrap_or(&v)
        .as_array()
        .expect("fixture: a list of cases");
    Some(
        list.iter()
            .map(|c| {
                let text = c["text"].as_str().expect("case.text").to_string();
                let ids = c
                    .get("tokens")
                    .or_else(|| c.get("ids"))
                    .and_then(|t| t.as_array())
                    .expect("case.tokens")
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect();
                let hex = c.get("pieces_hex").and_then(|h| h.as_array()).map(|h| {
                    h.iter()
                        .map(|x| x.as_str().unwrap().to_lowercase())
                        .collect()
                });
                (text, ids, hex)
            })
            .collect(),
    )
}

#[test]
fn smollm2_matches_llama_cpp() {
    let Some(path) = smollm2_gguf() else {
        return;
    };
    let tok = load_smollm2(&path);
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.bos_token().as_deref(), Some("<|im_start|>"));
    assert_eq!(tok.eos_token().as_deref(), Some("<|im_end|>"));
    assert_eq!(tok.eos_ids(), &[2, 0]);
    assert!(!tok.add_bos());
    assert!(tok.chat_template().unwrap().contains("<|im_start|>"));

    // A few ids from SmolLM2's own tokenizer, kept here so the test means something even
    // without the fixture.
    let known: &[(&str, &[u32])] = &[
        ("Hello, we can use", &[19556, 28, 392, 416, 722]),
        ("The capital of France is", &[504, 3575, 282, 4649, 314]),
        ("\n", &[198]),
        ("Hello world! 123", &[19556, 905, 17, 216, 33, 34, 35]),
        (
            "Café déjà vu.",
            &[51, 1939, 2756, 32564, 90, 16739, 386, 101, 30],
        ),
        ("  multiple   spaces", &[216, 2701, 256, 5600]),
    ];
    for (text, ids) in known {
        assert_eq!(tok.encode(text, true).unwrap(), *ids, "{text:?}");
    }

    match fixture_cases() {
        Some(cases) => {
            let mut bad = Vec::new();
            for (text, ids, hex) in &cases {
                let got = tok.encode(text, false).unwrap();
                if &got != ids {
                    bad.push(format!("{text:?}: llama.cpp {ids:?}, ours {got:?}"));
                }
                assert_eq!(
                    tok.decode(ids),
                    *text,
                    "decode of llama.cpp's ids for {text:?}"
                );
                if let Some(hex) = hex {
                    let ours: Vec<String> = ids
                        .iter()
                        .map(|&id| {
                            tok.token_bytes(id)
                                .unwrap()
                                .iter()
                                .map(|b| format!("{b:02x}"))
                                .collect()
                        })
                        .collect();
                    assert_eq!(&ours, hex, "token bytes for {text:?}");
                }
            }
            assert!(
                bad.is_empty(),
                "{} of {} cases differ:\n{}",
                bad.len(),
                cases.len(),
                bad.join("\n")
            );
            println!("{} fixture cases match llama.cpp", cases.len());
        }
        None => println!("no tokenize.json fixture yet: checked known ids and round trips only"),
    }

    let chat = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n";
    let ids = tok.encode(chat, false).unwrap();
    assert_eq!(ids[0], 1);
    assert!(ids.contains(&2));
    for s in ROUND_TRIP {
        let ids = tok.encode(s, false).unwrap();
        assert_eq!(tok.decode(&ids), *s, "round trip of {s:?}");
        check_stream(&tok, &ids);
    }
}
