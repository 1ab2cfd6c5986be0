//! `vspec bench --report DIR`: report.md and its SVG charts.
//!
//! Everything is checked before the first measurement (the context lengths, the peer file, the
//! directory), and the files are written only after the last one, each through a `.part` file
//! renamed into place, report.md last: a failed or interrupted run leaves no half report.

use super::peer::{PeerResult, PeerRun};
use super::plots::{stacked_bars, xy_chart, Axes, Series, StackedBar};
use super::sweep::{PlannedMemory, SweepPoint};
use super::*;

/// The charts, in the order report.md shows them.
const CTX_DECODE_SVG: &str = "ctx-decode.svg";
const CTX_PREFILL_SVG: &str = "ctx-prefill.svg";
const SIZE_DECODE_SVG: &str = "size-decode.svg";
const SIZE_PREFILL_SVG: &str = "size-prefill.svg";
const MEMORY_SVG: &str = "memory.svg";
const REPORT_MD: &str = "report.md";

/// A report checked and ready to be written once the measurements are in.
pub(super) struct ReportPlan {
    dir: PathBuf,
    peer: Option<(PathBuf, PeerRun)>,
    command: String,
    started: String,
    load_before: Option<String>,
}

/// What the measurements gave.
pub(super) struct ReportInput<'a> {
    pub(super) infos: &'a [ModelInfo],
    pub(super) results: &'a [Measurement],
    pub(super) bandwidth: &'a [(usize, f64)],
    pub(super) backend: &'a str,
    pub(super) args: &'a BenchArgs,
    pub(super) sweep: &'a [SweepPoint],
    pub(super) memory: &'a [PlannedMemory],
}

impl ReportPlan {
    /// Checks the report's flags and makes the directory, before anything slow runs.
    pub(super) fn prepare(dir: &Path, a: &BenchArgs) -> Result<ReportPlan> {
        sweep::context_lengths(a)?;
        if a.n_prompt.len() != 1 || a.n_gen.len() != 1 {
            bail!(
                "--report takes one -p and one -n value (its sweep decodes -n tokens at each \
                 --ctx length): run the lists without --report"
            );
        }
        let peer = match &a.peer {
            Some(p) => Some((p.clone(), peer::load(p)?)),
            None => None,
        };
        if a.json {
            eprintln!("[vspec] --json: the JSON goes to stdout, the report to the directory");
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow!("--report {}: cannot create it: {e}", dir.display()))?;
        Ok(ReportPlan {
            dir: dir.to_path_buf(),
            peer,
            command: command_line(),
            started: utc_now(),
            load_before: load_average(),
        })
    }

    /// Draws the charts and writes them and report.md.
    pub(super) fn write(&self, input: &ReportInput) -> Result<()> {
        let charts = self.charts(input)?;
        let markdown = self.markdown(input);
        for (name, text) in charts
            .iter()
            .map(|(n, t)| (*n, t.as_str()))
            .chain([(REPORT_MD, markdown.as_str())])
        {
            write_atomically(&self.dir.join(name), text)?;
        }
        eprintln!(
            "[vspec] report written to {}",
            self.dir.join(REPORT_MD).display()
        );
        Ok(())
    }

    fn charts(&self, input: &ReportInput) -> Result<Vec<(&'static str, String)>> {
        let ctx_axes = |title| Axes {
            title,
            x_desc: "context length (tokens, log scale)",
            y_desc: "tokens per second",
            log_x: true,
        };
        let size_axes = |title| Axes {
            title,
            x_desc: "file size (MiB)",
            y_desc: "tokens per second",
            log_x: false,
        };
        let n = input.args.report_gen();
        let decode_title = format!("decode: tg{n} after a prompt of the context length");
        let bars: Vec<StackedBar> = self.memory_bars(input);
        let longest = input.memory.iter().map(|m| m.ctx).max().unwrap_or(0);
        Ok(vec![
            (
                CTX_DECODE_SVG,
                xy_chart(&ctx_axes(&decode_title), &{
                    let mut series = sweep_series(input, true);
                    series.extend(self.depth_series());
                    series
                })?,
            ),
            (
                CTX_PREFILL_SVG,
                xy_chart(
                    &ctx_axes("prefill: a prompt of the context length, from an empty cache"),
                    &sweep_series(input, false),
                )?,
            ),
            (
                SIZE_DECODE_SVG,
                xy_chart(
                    &size_axes("decode speed against file size"),
                    &self.size_series(input, "tg"),
                )?,
            ),
            (
                SIZE_PREFILL_SVG,
                xy_chart(
                    &size_axes("prefill speed against file size"),
                    &self.size_series(input, "pp"),
                )?,
            ),
            (
                MEMORY_SVG,
                stacked_bars(
                    &format!("planned memory of a {longest}-token session"),
                    "MiB",
                    &["weights", "activation arena", "KV cache"],
                    &bars,
                )?,
            ),
        ])
    }

    /// Speed against file size: this run's standard tests of kind `kind` (`pp` or `tg`), one
    /// series per thread count, then the peer run's, one per engine, test and thread count.
    fn size_series(&self, input: &ReportInput, kind: &str) -> Vec<Series> {
        let mut out = Vec::new();
        let mut threads: Vec<usize> = input.results.iter().map(|m| m.threads).collect();
        threads.sort_unstable();
        threads.dedup();
        for t in threads {
            let ms: Vec<&Measurement> = input
                .results
                .iter()
                .filter(|m| m.threads == t && m.test.depth == 0 && m.test.name().starts_with(kind))
                .collect();
            let Some(first) = ms.first() else { continue };
            out.push(Series {
                label: format!(
                    "vspec {}, {} (this run)",
                    first.test.name(),
                    threads_text(t)
                ),
                points: ms
                    .iter()
                    .map(|m| {
                        let mib = file_bytes(&input.infos[m.model]) as f64 / MIB;
                        (mib, mean_sd(&m.samples_tok_s()).0)
                    })
                    .collect(),
                point_labels: ms
                    .iter()
                    .map(|m| input.infos[m.model].label.clone())
                    .collect(),
                line: false,
                hollow: false,
            });
        }
        let Some((_, run)) = &self.peer else {
            return out;
        };
        let groups = group_by(
            run.results
                .iter()
                .filter(|r| r.kind() == kind && r.depth() == 0),
            |r| (r.engine.clone(), r.threads, r.test.clone()),
        );
        for ((engine, t, test), rs) in groups {
            out.push(Series {
                label: format!("{engine} {test}, {} (side by side)", threads_text(t)),
                points: rs.iter().map(|r| (r.bytes as f64 / MIB, r.tok_s)).collect(),
                point_labels: rs.iter().map(|r| r.file_name().to_string()).collect(),
                line: false,
                hollow: true,
            });
        }
        out
    }

    /// The other engines' decode speed at depth from the peer run (`tgN @ dD` tests, run with
    /// the side-by-side script's `--depth`): one hollow series per engine, file and thread
    /// count, at x = D. Vspec's own side-by-side entries are left out: this run's curves are
    /// vspec's, and a legend of every file twice would hide the chart.
    fn depth_series(&self) -> Vec<Series> {
        let Some((_, run)) = &self.peer else {
            return Vec::new();
        };
        let groups = group_by(
            run.results
                .iter()
                .filter(|r| r.kind() == "tg" && r.depth() > 0 && r.engine != "vspec"),
            |r| (r.engine.clone(), r.file_name().to_string(), r.threads),
        );
        groups
            .into_iter()
            .map(|((engine, file, t), mut rs)| {
                rs.sort_by_key(|r| r.depth());
                Series {
                    label: format!(
                        "{engine} {file} {}, {} (side by side)",
                        rs[0].test.split(" @ ").next().unwrap_or(""),
                        threads_text(t)
                    ),
                    points: rs.iter().map(|r| (r.depth() as f64, r.tok_s)).collect(),
                    point_labels: Vec::new(),
                    line: rs.len() > 1,
                    hollow: true,
                }
            })
            .collect()
    }

    fn memory_bars(&self, input: &ReportInput) -> Vec<StackedBar> {
        let longest = input.memory.iter().map(|m| m.ctx).max().unwrap_or(0);
        input
            .memory
            .iter()
            .filter(|m| m.ctx == longest)
            .map(|m| StackedBar {
                label: input.infos[m.model].label.clone(),
                parts: vec![
                    m.weight_bytes as f64 / MIB,
                    m.arena_bytes as f64 / MIB,
                    m.kv_bytes as f64 / MIB,
                ],
            })
            .collect()
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// `results` grouped by `key`, groups and their members in first-seen order.
fn group_by<'r, K: PartialEq>(
    results: impl Iterator<Item = &'r PeerResult>,
    key: impl Fn(&PeerResult) -> K,
) -> Vec<(K, Vec<&'r PeerResult>)> {
    let mut groups: Vec<(K, Vec<&PeerResult>)> = Vec::new();
    for r in results {
        let k = key(r);
        match groups.iter_mut().find(|g| g.0 == k) {
            Some(g) => g.1.push(r),
            None => groups.push((k, vec![r])),
        }
    }
    groups
}

/// Prefill or decode speed against context length: one series per file and thread count.
fn sweep_series(input: &ReportInput, decode: bool) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    let mut keys: Vec<(usize, usize)> = Vec::new();
    for p in input.sweep {
        let samples = if decode {
            p.decode_tok_s()
        } else {
            p.prefill_tok_s()
        };
        if samples.is_empty() {
            continue;
        }
        let point = (p.ctx as f64, mean_sd(&samples).0);
        match keys.iter().position(|&k| k == (p.model, p.threads)) {
            Some(i) => out[i].points.push(point),
            None => {
                keys.push((p.model, p.threads));
                out.push(Series {
                    label: format!(
                        "{}, {}",
                        input.infos[p.model].label,
                        threads_text(p.threads)
                    ),
                    points: vec![point],
                    point_labels: Vec::new(),
                    line: true,
                    hollow: false,
                });
            }
        }
    }
    out
}

/// The size on disk of a model file; a Hugging Face directory counts its weights as stored.
fn file_bytes(info: &ModelInfo) -> u64 {
    match std::fs::metadata(&info.path) {
        Ok(m) if m.is_file() => m.len(),
        _ => info.weight_bytes as u64,
    }
}

/// Writes `text` to `path` through `path.part`, so a reader never sees half a file.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let result = std::fs::write(&part, text).and_then(|_| std::fs::rename(&part, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&part);
        bail!("cannot write {}: {e}", path.display());
    }
    Ok(())
}

/// The command as typed, arguments with spaces or quotes single-quoted for a POSIX shell.
fn command_line() -> String {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let quoted: Vec<String> = args
        .iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./,=:+@".contains(c));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect();
    format!("vspec {}", quoted.join(" "))
}

/// The CPU model as the kernel names it (x86 and most ARM kernels), if it says.
fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| {
            l.starts_with("model name") || l.starts_with("Model") || l.starts_with("Hardware")
        })
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The 1, 5 and 15 minute load averages, if the system says.
fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let parts: Vec<&str> = text.split_whitespace().take(3).collect();
    (parts.len() == 3).then(|| parts.join(" "))
}

/// Now, as `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Year, month, day of a day count since 1970-01-01 (proleptic Gregorian; H. Hinnant's
/// days-to-civil algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

mod markdown;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_789), (2026, 12, 2));
    }
}
