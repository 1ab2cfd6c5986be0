//! Recipes: a default weight format plus overrides by tensor-name pattern.
//!
//! Text form, one rule per line, `#` comments:
//! ```text
//! default = VQ4
//! token_embd.weight = Q8_0
//! *.attn_v.weight = Q8_0       # `*` matches any run of characters
//! blk.0.* = Q8_0
//! ```
//! The last matching rule wins. Vectors (norms, biases) always stay F32: they are tiny and every
//! op reads them at full precision. A pattern that matches no tensor of the model is an error, as
//! is a format whose block does not divide a tensor's rows.

use anyhow::{anyhow, bail, Result};
use vspec_core::format::Format;

/// One `pattern = FORMAT` rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Glob over GGUF tensor names (`*` = any characters).
    pub pattern: String,
    /// Format for matching tensors.
    pub format: Format,
    /// 1-based line in the recipe text, for messages.
    pub line: usize,
}

/// A parsed recipe.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    /// Format of matrices no rule matches.
    pub default: Format,
    /// Overrides, in file order.
    pub rules: Vec<Rule>,
    /// Where it came from (for messages and the output file's metadata).
    pub source: String,
    /// Matrices whose rows the chosen format cannot hold fall back to `fallback` instead of
    /// failing (the built-in `--bits` recipes set it; explicit recipe files do not).
    pub fallback: Option<Format>,
}

/// `*` glob match.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

fn parse_format(s: &str, line: usize, source: &str) -> Result<Format> {
    Format::from_name(s).ok_or_else(|| anyhow!("{source}:{line}: unknown format '{s}'"))
}

impl Recipe {
    /// Parses recipe text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Recipe> {
        let mut default = None;
        let mut rules = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let body = raw.split('#').next().unwrap_or("").trim();
            if body.is_empty() {
                continue;
            }
            let Some((lhs, rhs)) = body.split_once('=') else {
                bail!("{source}:{line}: expected 'pattern = FORMAT', got '{body}'");
            };
            let (lhs, rhs) = (lhs.trim(), rhs.trim());
            if lhs.is_empty() {
                bail!("{source}:{line}: empty pattern");
            }
            let format = parse_format(rhs, line, source)?;
            if !vspec_core::quant::can_quantize(format) {
                bail!(
                    "{source}:{line}: Vspec cannot quantize to {}",
                    format.name()
                );
            }
            if lhs == "default" {
                default = Some(format);
            } else {
                rules.push(Rule {
                    pattern: lhs.to_string(),
                    format,
                    line,
                });
            }
        }
        let default = default.ok_or_else(|| anyhow!("{source}: no 'default = FORMAT' line"))?;
        Ok(Recipe {
            default,
            rules,
            source: source.to_string(),
            fallback: None,
        })
    }

    /// The built-in recipe for `--bits 2|3|4|8` for a model of `n_layers` blocks with a tied or
    /// separate output head, measured on SmolLM2 (README, "Quality").
    ///
    /// What the measurements (KL probes, one tensor class at a time one tier up) said: the
    /// embedding / output head matters most, then the tensors that write into the residual
    /// stream (`attn_v`, `ffn_down`), then the first blocks' FFN and the first half's attention
    /// output. So the 3-bit tier lifts those to VQ4: the first ⌈n/8⌉ blocks' `ffn_gate` and
    /// `ffn_up` and the first ⌈n/2⌉ blocks' `attn_output`. The 2-bit tier is meant for a rotated
    /// model (`convert --rotate`, its default): probes there, one class at a time from VQ3
    /// everywhere, cost in KLD per MB saved going to VQ2: `attn_q` 0.027, `attn_output` 0.033,
    /// `ffn_gate` 0.043, `ffn_down` 0.054, head 0.060, `ffn_up` 0.062, `attn_k` 0.073, `attn_v`
    /// 0.34. Then the trellis codes replaced the scalar ones (held-out text, KLD): TQ3 for NQ3
    /// 0.339 → 0.244; TQ2 for VQ2 and TQ4 for VQ4 0.230 in 0.73 MB less; the per-block gain
    /// refit 0.218. The 1.1 MB left under 55 MB went to `attn_k` in TQ4 and the first half's
    /// `attn_output` in TQ3 (0.192), which beat `attn_k` and the first six `ffn_down` (0.204).
    pub fn for_bits(bits: u32, n_layers: usize, tied_head: bool) -> Result<Recipe> {
        let mut text = String::new();
        let head = |text: &mut String, f: &str| {
            text.push_str(&format!("token_embd.weight = {f}\n"));
            if !tied_head {
                text.push_str(&format!("output.weight = {f}\n"));
            }
        };
        let early = |text: &mut String, fraction: usize, what: &[&str], f: &str| {
            for l in 0..n_layers.div_ceil(fraction) {
                for w in what {
                    text.push_str(&format!("blk.{l}.{w}.weight = {f}\n"));
                }
            }
        };
        match bits {
            8 => text.push_str("default = Q8_0\n"),
            4 => {
                text.push_str("default = VQ4\n");
                head(&mut text, "Q5_1");
            }
            3 => {
                text.push_str("default = VQ3\n");
                head(&mut text, "VQ4");
                text.push_str("*.attn_v.weight = VQ4\n*.ffn_down.weight = VQ4\n");
                early(&mut text, 8, &["ffn_gate", "ffn_up"], "VQ4");
                early(&mut text, 2, &["attn_output"], "VQ4");
            }
            2 => {
                // The trellis codes at 3.25 bpw nearly everywhere; 2 bits where a probe found it
                // cheapest per byte saved (q, and the attention output of the second half), 4
                // bits for V (by far the most sensitive per byte) and K.
                text.push_str("default = TQ3\n");
                head(&mut text, "TQ3");
                text.push_str("*.attn_v.weight = TQ4\n*.attn_k.weight = TQ4\n");
                text.push_str("*.attn_q.weight = TQ2\n*.attn_output.weight = TQ2\n");
                early(&mut text, 2, &["attn_output"], "TQ3");
            }
            other => bail!("--bits {other}: choose 2, 3, 4 or 8"),
        }
        let mut r = Recipe::parse(&text, &format!("--bits {bits}"))?;
        r.fallback = Some(Format::Q8_0);
        Ok(r)
    }

    /// The format for matrix `name` with rows of `cols` weights.
    pub fn format_for(&self, name: &str, cols: usize) -> Result<Format> {
        // A rotated model's output mix is small (d × d) and read by the whole head: it stays
        // at 8 bits unless a rule names it.
        let mut f = if name == "output_mix.weight" {
            Format::Q8_0
        } else {
            self.default
        };
        let mut from = "default".to_string();
        for r in &self.rules {
            if glob_match(&r.pattern, name) {
                f = r.format;
                from = format!("{}:{}", self.source, r.line);
            }
        }
        if !cols.is_multiple_of(f.block_elems()) {
            match self.fallback {
                Some(fb) if cols.is_multiple_of(fb.block_elems()) => {
                    log::warn!("{name}: rows of {cols} do not fit {} blocks; using {}", f.name(), fb.name());
                    return Ok(fb);
                }
                _ => bail!(
                    "{name}: {} ({from}) needs rows that are a multiple of {}, this tensor's rows have {cols} weights",
                    f.name(),
                    f.block_elems()
                ),
            }
        }
        Ok(f)
    }

    /// Errors if a rule matches none of `names` (a typo would otherwise pass silently).
    pub fn check_patterns<'n>(&self, names: impl Iterator<Item = &'n str> + Clone) -> Result<()> {
        for r in &self.rules {
            if !names.clone().any(|n| glob_match(&r.pattern, n)) {
                bail!(
                    "{}:{}: pattern '{}' matches no tensor of this model",
                    self.source,
                    r.line,
                    r.pattern
                );
            }
        }
        Ok(())
    }

    /// The recipe as text (stored in the output file's metadata).
    pub fn to_text(&self) -> String {
        let mut s = format!("default = {}\n", self.default.name());
        for r in &self.rules {
            s.push_str(&format!("{} = {}\n", r.pattern, r.format.name()));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_tiers_follow_the_model_shape() {
        let r = Recipe::for_bits(3, 30, true).unwrap();
        let f = |name: &str| r.format_for(name, 576).unwrap();
        assert_eq!(f("token_embd.weight"), Format::VQ4);
        assert_eq!(f("blk.0.ffn_up.weight"), Format::VQ4);
        assert_eq!(f("blk.3.ffn_gate.weight"), Format::VQ4);
        assert_eq!(f("blk.4.ffn_gate.weight"), Format::VQ3);
        assert_eq!(f("blk.14.attn_output.weight"), Format::VQ4);
        assert_eq!(f("blk.15.attn_output.weight"), Format::VQ3);
        assert_eq!(f("blk.29.ffn_down.weight"), Format::VQ4);
        assert!(!r.rules.iter().any(|x| x.pattern == "output.weight"));
        // A separate head gets the embedding's tier; one block still gets its early lifts.
        let r = Recipe::for_bits(3, 1, false).unwrap();
        assert_eq!(r.format_for("output.weight", 64).unwrap(), Format::VQ4);
        assert_eq!(
            r.format_for("blk.0.ffn_up.weight", 64).unwrap(),
            Format::VQ4
        );
        let names = ["token_embd.weight", "output.weight", "blk.0.ffn_up.weight"];
        assert!(r.check_patterns(names.iter().copied()).is_err()); // gate etc. are missing
        let r = Recipe::for_bits(2, 30, true).unwrap();
        let f = |name: &str| r.format_for(name, 576).unwrap();
        assert_eq!(f("token_embd.weight"), Format::TQ3);
        assert_eq!(f("blk.7.ffn_up.weight"), Format::TQ3);
        assert_eq!(f("blk.7.attn_v.weight"), Format::TQ4);
        assert_eq!(f("blk.7.attn_k.weight"), Format::TQ4);
        assert_eq!(f("blk.7.attn_q.weight"), Format::TQ2);
        assert_eq!(f("blk.14.attn_output.weight"), Format::TQ3);
        assert_eq!(f("blk.15.attn_output.weight"), Format::TQ2);
        assert_eq!(f("output_mix.weight"), Format::Q8_0);
        for bits in [2, 4, 8] {
            Recipe::for_bits(bits, 2, true).unwrap();
        }
        let e = Recipe::for_bits(5, 2, true).unwrap_err().to_string();
        assert!(e.contains("--bits 5"), "{e}");
        // Rows that VQ blocks cannot hold fall back to Q8_0.
        let r = Recipe::for_bits(4, 2, true).unwrap();
        assert_eq!(
            r.format_for("blk.0.attn_q.weight", 96).unwrap(),
            Format::Q8_0
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match("*.attn_v.weight", "blk.3.attn_v.weight"));
        assert!(glob_match("blk.1*", "blk.12.ffn_up.weight"));
        assert!(!glob_match("blk.1.*", "blk.12.ffn_up.weight"));
        assert!(glob_match("*", "x"));
        assert!(glob_match("a*b*c", "a-b-b-c"));
        assert!(!glob_match("a*b*c", "a-b-b-d"));
    }

    #[test]
    fn last_rule_wins_and_errors_name_lines() {
        let r = Recipe::parse(
            "default = Q8_0\nblk.* = Q4_1\nblk.0.* = Q8_0 # first layer\n",
            "r.txt",
        )
        .unwrap();
        assert_eq!(
            r.format_for("blk.0.attn_q.weight", 64).unwrap(),
            Format::Q8_0
        );
        assert_eq!(
            r.format_for("blk.1.attn_q.weight", 64).unwrap(),
            Format::Q4_1
        );
        assert_eq!(r.format_for("output.weight", 64).unwrap(), Format::Q8_0);
        let e = Recipe::parse("default = Q9\n", "r.txt")
            .unwrap_err()
            .to_string();
        assert!(e.contains("r.txt:1") && e.contains("Q9"), "{e}");
        let e = Recipe::parse("blk.* = Q8_0\n", "r.txt")
            .unwrap_err()
            .to_string();
        assert!(e.contains("default"), "{e}");
        let e = r
            .check_patterns(["token_embd.weight"].into_iter())
            .unwrap_err()
            .to_string();
        assert!(e.contains("r.txt:2") && e.contains("blk.*"), "{e}");
        let e = r
            .format_for("blk.1.attn_q.weight", 48)
            .unwrap_err()
            .to_string();
        assert!(e.contains("multiple of 32"), "{e}");
    }
}
