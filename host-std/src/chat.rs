//! Chat templates: renders a conversation into the prompt text a model was trained on, from the
//! Jinja template the model ships (`tokenizer.chat_template` in GGUF, `chat_template` in
//! `tokenizer_config.json`).
//!
//! Rendering follows Hugging Face transformers' `apply_chat_template`: blocks are trimmed
//! (`trim_blocks`, `lstrip_blocks`), loop controls work, the variables are `messages`,
//! `add_generation_prompt`, `bos_token` and `eos_token`, and `raise_exception(msg)`,
//! `strftime_now(fmt)`, `tojson` and Python string methods (`.strip()`, `.startswith()`, ...)
//! are available.

use anyhow::{anyhow, Result};
use minijinja::{context, Environment, ErrorKind};
use serde::Serialize;

use crate::tokenizer::Tokenizer;

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant` (or whatever roles the template knows).
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

const NAME: &str = "chat_template";

/// A compiled chat template with the model's BOS/EOS token strings.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish_non_exhaustive()
    }
}

/// Formats a template error with its kind, detail and template line.
fn describe(e: &minijinja::Error) -> String {
    let mut msg = format!("{e}");
    if let Some(src) = e.template_source() {
        if let Some(line) = e.line().and_then(|l| src.lines().nth(l.saturating_sub(1))) {
            msg.push_str(&format!(
                "\n  line {}: {}",
                e.line().unwrap_or(0),
                line.trim()
            ));
        }
    }
    msg
}

impl ChatTemplate {
    /// Compiles `source`; a syntax error is reported here, naming the line.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("raise_exception: {msg}"),
                ))
            },
        );
        env.add_function("strftime_now", |fmt: String| -> String {
            strftime_now(&fmt)
        });
        env.add_template_owned(NAME, source.to_string())
            .map_err(|e| anyhow!("chat template does not compile: {}", describe(&e)))?;
        Ok(ChatTemplate {
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// The template a tokenizer carries, with its BOS/EOS strings; an error if it has none.
    pub fn from_tokenizer(tok: &Tokenizer) -> Result<Self> {
        let src = tok
            .chat_template()
            .ok_or_else(|| anyhow!("the model has no chat template"))?;
        Self::new(
            src,
            &tok.bos_token().unwrap_or_default(),
            &tok.eos_token().unwrap_or_default(),
        )
    }

    /// Renders `messages`; with `add_generation_prompt`, ends with the opening of the
    /// assistant's turn. Errors (including the template's own `raise_exception`) say why.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let tmpl = self
            .env
            .get_template(NAME)
            .map_err(|e| anyhow!("chat template: {}", describe(&e)))?;
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })
        .map_err(|e| anyhow!("chat template failed to render: {}", describe(&e)))
    }
}

/// `strftime_now` for templates that print today's date (Llama 3.x). Supports the common
/// `%d %b %Y %m %B %H %M %S %y %j %%` fields in UTC.
fn strftime_now(fmt: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    strftime(fmt, secs)
}

fn strftime(fmt: &str, secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let is_leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let cum = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let jday = cum[(m - 1) as usize] + d + i64::from(m > 2 && is_leap(y));
    let month = MONTHS[(m - 1) as usize];
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('b') => out.push_str(&month[..3]),
            Some('B') => out.push_str(month),
            Some('H') => out.push_str(&format!("{:02}", tod / 3600)),
            Some('M') => out.push_str(&format!("{:02}", tod / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", tod % 60)),
            Some('j') => out.push_str(&format!("{jday:03}")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M-Instruct's template, as its GGUF carries it.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn smollm2_chatml() {
        let t = ChatTemplate::new(SMOLLM2, "<|im_start|>", "<|im_end|>").unwrap();
        let out = t
            .render(&[ChatMessage::new("user", "Hi there!")], true)
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nHi there!<|im_end|>\n<|im_start|>assistant\n"
        );
        let out = t
            .render(
                &[
                    ChatMessage::new("system", "Be brief."),
                    ChatMessage::new("user", "2+2?"),
                    ChatMessage::new("assistant", "4"),
                ],
                false,
            )
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n\
             <|im_start|>assistant\n4<|im_end|>\n"
        );
    }

    #[test]
    fn hf_features() {
        // trim_blocks/lstrip_blocks, .strip(), tojson, bos_token, loop controls.
        let src = "{{ bos_token }}\n{% for m in messages %}\n  {% if m.role == 'skip' %}{% continue %}{% endif %}\n[{{ m.role }}] {{ m.content.strip() | tojson }}\n{% endfor %}\n{% if add_generation_prompt %}>{% endif %}";
        let t = ChatTemplate::new(src, "<s>", "</s>").unwrap();
        let out = t
            .render(
                &[
                    ChatMessage::new("user", "  hi \"you\"  "),
                    ChatMessage::new("skip", "x"),
                ],
                true,
            )
            .unwrap();
        assert_eq!(out, "<s>\n[user] \"hi \\\"you\\\"\"\n>");
    }

    #[test]
    fn errors_are_clear() {
        let e = ChatTemplate::new("{% for m in messages %}{{ m.content }", "", "").unwrap_err();
        let s = format!("{e}");
        assert!(s.contains("does not compile"), "{s}");
        let t = ChatTemplate::new(
            "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}ok",
            "",
            "",
        )
        .unwrap();
        let e = t
            .render(&[ChatMessage::new("assistant", "x")], false)
            .unwrap_err();
        assert!(format!("{e}").contains("first must be user"), "{e}");
        assert_eq!(
            t.render(&[ChatMessage::new("user", "x")], false).unwrap(),
            "ok"
        );
    }

    #[test]
    fn strftime_known_date() {
        // 2024-07-26 13:25:09 UTC
        assert_eq!(
            strftime("%d %b %Y %H:%M:%S %j %B %%", 1_722_000_309),
            "26 Jul 2024 13:25:09 208 July %"
        );
    }
}
