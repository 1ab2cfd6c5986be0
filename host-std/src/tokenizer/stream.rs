//! Incremental detokenization: text out as soon as it forms whole UTF-8 characters.

use super::Tokenizer;

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
