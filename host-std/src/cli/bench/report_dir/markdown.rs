//! report.md: the machine, the command, the charts and the tables behind them.

use super::*;

impl ReportPlan {
    pub(super) fn markdown(&self, input: &ReportInput) -> String {
        let a = input.args;
        let mut md = String::new();
        let _ = writeln!(md, "# vspec bench report\n");
        let _ = writeln!(
            md,
            "Made by vspec {} on {} with:\n\n```\n{}\n```\n",
            env!("CARGO_PKG_VERSION"),
            self.started,
            self.command
        );
        self.machine_section(&mut md, input);
        files_section(&mut md, input);
        context_section(&mut md, input, !self.depth_series().is_empty());
        self.size_section(&mut md);
        memory_section(&mut md, input);
        let _ = writeln!(
            md,
            "## Standard tests\n\n`vspec bench`'s own table (llama-bench's protocol: `pp{}` from \
             an empty cache in steps of {}, `tg{}` from an empty cache), with the decode \
             roofline.\n",
            a.report_prompt(),
            a.batch_size,
            a.report_gen()
        );
        md.push_str(&tables(
            input.infos,
            input.results,
            input.bandwidth,
            input.backend,
            a.bw_mib,
        ));
        md
    }

    fn machine_section(&self, md: &mut String, input: &ReportInput) {
        let a = input.args;
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let _ = writeln!(md, "## Machine\n");
        let _ = writeln!(
            md,
            "- CPU: {}, {cores} cores available to this process",
            cpu_model().unwrap_or_else(|| "unknown (no model name in /proc/cpuinfo)".into())
        );
        let _ = writeln!(md, "- kernels: {}", input.backend);
        if input.bandwidth.is_empty() {
            let _ = writeln!(md, "- memory read bandwidth: not measured (`--bw-mib 0`)");
        } else {
            let parts: Vec<String> = input
                .bandwidth
                .iter()
                .map(|&(t, b)| format!("{:.2} GB/s with {}", b / 1e9, threads_text(t)))
                .collect();
            let _ = writeln!(
                md,
                "- memory read bandwidth (measured, {} MiB buffer, best of {BANDWIDTH_PASSES}): {}",
                a.bw_mib,
                parts.join(", ")
            );
        }
        let load_after = load_average();
        if let (Some(before), Some(after)) = (&self.load_before, &load_after) {
            let _ = writeln!(
                md,
                "- load average (1, 5, 15 min): {before} before, {after} after"
            );
        }
        let _ = writeln!(
            md,
            "\nEach speed is the mean of {} repetition{} (± their sample standard deviation, 0 \
             for one). Other work on the machine moves the numbers by more than that; compare \
             only numbers from one sitting.\n",
            a.repetitions,
            if a.repetitions == 1 { "" } else { "s" }
        );
        let busiest = [&self.load_before, &load_after]
            .iter()
            .filter_map(|l| l.as_deref()?.split_whitespace().next()?.parse::<f64>().ok())
            .fold(0.0f64, f64::max);
        if cores > 0 && busiest > 0.5 * cores as f64 {
            let _ = writeln!(
                md,
                "**This machine was shared while it ran** (load average up to {busiest:.2} on \
                 {cores} cores): the speeds are noisy and lower than on an idle machine."
            );
        }
        md.push('\n');
    }

    fn size_section(&self, md: &mut String) {
        let _ = writeln!(md, "## Speed against file size\n");
        let _ = writeln!(
            md,
            "Filled markers: this run's standard tests. Hollow markers: the side-by-side run \
             with llama.cpp, if one was given.\n"
        );
        let _ = writeln!(md, "![decode speed against file size]({SIZE_DECODE_SVG})\n");
        let _ = writeln!(
            md,
            "![prefill speed against file size]({SIZE_PREFILL_SVG})\n"
        );
        let Some((path, run)) = &self.peer else {
            let _ = writeln!(
                md,
                "No llama.cpp results were given, so these charts show vspec only. \
                 `bench/llamacpp_side_by_side.sh` measures both engines in alternation and \
                 writes `target/side-by-side/peer.json`; pass it with `--peer`.\n"
            );
            return;
        };
        let mut about = Vec::new();
        if let Some(r) = run.rounds {
            about.push(format!("medians of {r} alternating rounds"));
        }
        if let Some(v) = &run.llama_cpp_python {
            about.push(format!("llama-cpp-python {v}"));
        }
        match (&run.cpu, run.cores) {
            (Some(cpu), Some(c)) => about.push(format!("on {cpu}, {c} cores")),
            (Some(cpu), None) => about.push(format!("on {cpu}")),
            (None, Some(c)) => about.push(format!("on {c} cores")),
            (None, None) => {}
        }
        let _ = writeln!(
            md,
            "Side-by-side numbers from `{}`{}. They come from their own sitting, so compare \
             llama.cpp with the vspec numbers of that same file, not with this run's.\n",
            path.display(),
            if about.is_empty() {
                String::new()
            } else {
                format!(" ({})", about.join(", "))
            }
        );
        let rows: Vec<Vec<String>> = run
            .results
            .iter()
            .map(|r| {
                vec![
                    r.file_name().to_string(),
                    mib(r.bytes as f64),
                    r.engine.clone(),
                    r.threads.to_string(),
                    r.test.clone(),
                    format!("{:.2}", r.tok_s),
                ]
            })
            .collect();
        push_table(
            md,
            &["file", "size", "engine", "threads", "test", "t/s"],
            &[false, true, false, true, true, true],
            &rows,
        );
        md.push('\n');
    }
}

fn files_section(md: &mut String, input: &ReportInput) {
    let _ = writeln!(md, "## Files\n");
    let rows: Vec<Vec<String>> = input
        .infos
        .iter()
        .map(|i| {
            vec![
                i.label.clone(),
                i.arch.clone(),
                mib(file_bytes(i) as f64),
                mib(i.weight_bytes as f64),
                params_text(i.params),
                format!(
                    "{:.2}",
                    8.0 * i.weight_bytes as f64 / i.params.max(1) as f64
                ),
            ]
        })
        .collect();
    push_table(
        md,
        &[
            "file",
            "arch",
            "file size",
            "weights",
            "params",
            "bits/weight",
        ],
        &[false, false, true, true, true, true],
        &rows,
    );
    md.push('\n');
}

fn context_section(md: &mut String, input: &ReportInput, peer_depths: bool) {
    let n = input.args.report_gen();
    let _ = writeln!(md, "## Speed against context length\n");
    let _ = writeln!(
        md,
        "At each context length C, in a fresh session: a C-token prompt from an empty cache \
         (`ppC`, prefill in steps of {}), then {n} tokens decoded one at a time after it \
         (`tg{n} @ dC`, each step attending to C…C+{} cached positions).\n",
        input.args.batch_size,
        n.saturating_sub(1)
    );
    if n > 0 {
        let _ = writeln!(
            md,
            "![decode speed against context length]({CTX_DECODE_SVG})\n"
        );
        if peer_depths {
            let _ = writeln!(
                md,
                "Hollow markers: the side-by-side run's decode tests at a depth for the other \
                 engines (`tgN @ dD`, `bench/llamacpp_side_by_side.sh --depth`), at x = D, each \
                 on its file; they come from their own sitting (its table has vspec's numbers of \
                 that sitting).\n"
            );
        }
    } else {
        let _ = writeln!(md, "Decode was not measured (`-n 0`).\n");
    }
    let _ = writeln!(
        md,
        "![prefill speed against context length]({CTX_PREFILL_SVG})\n"
    );
    let rows: Vec<Vec<String>> = input
        .sweep
        .iter()
        .map(|p| {
            let (pp, pp_sd) = mean_sd(&p.prefill_tok_s());
            let tg = if p.n_gen > 0 {
                let (tg, sd) = mean_sd(&p.decode_tok_s());
                format!("{tg:.2} ± {sd:.2}")
            } else {
                "-".into()
            };
            vec![
                input.infos[p.model].label.clone(),
                p.threads.to_string(),
                p.ctx.to_string(),
                format!("{pp:.2} ± {pp_sd:.2}"),
                tg,
            ]
        })
        .collect();
    push_table(
        md,
        &[
            "file",
            "threads",
            "C",
            "ppC t/s",
            &format!("tg{n} @ dC t/s"),
        ],
        &[false, true, true, true, true],
        &rows,
    );
    md.push('\n');
}

fn memory_section(md: &mut String, input: &ReportInput) {
    let _ = writeln!(md, "## Planned memory\n");
    let _ = writeln!(
        md,
        "The memory plan of a session (`vspec inspect` prints the same): every byte is placed \
         before the first token. Weights as stored, the activation arena for {} tokens per \
         step, and the KV cache for the whole context. The chart shows the longest context.\n",
        input.args.batch_size
    );
    let _ = writeln!(md, "![planned memory per file]({MEMORY_SVG})\n");
    let rows: Vec<Vec<String>> = input
        .memory
        .iter()
        .map(|m| {
            vec![
                input.infos[m.model].label.clone(),
                m.ctx.to_string(),
                mib(m.weight_bytes as f64),
                mib(m.arena_bytes as f64),
                mib(m.kv_bytes as f64),
                mib(m.total_bytes() as f64),
            ]
        })
        .collect();
    push_table(
        md,
        &["file", "ctx", "weights", "arena", "KV cache", "total"],
        &[false, true, true, true, true, true],
        &rows,
    );
    md.push('\n');
}
