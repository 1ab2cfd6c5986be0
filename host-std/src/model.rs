//! Opening models: a GGUF file, a `.vspec` file, or a Hugging Face directory (config.json +
//! safetensors shards), memory-mapped, headers parsed and validated by the core, weights bound
//! zero-copy.

pub use crate::engine::{caller_memory_bytes, Engine};
use crate::expand::{self, Expansion, Rewritten};
use crate::resident::{release_pages, return_free_heap};
use crate::tokenizer::Tokenizer;
use anyhow::{anyhow, bail, Context, Result};
use memmap2::Mmap;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use vspec_core::gguf::Gguf;
use vspec_core::graph::{Graph, Limits};
use vspec_core::kernels::KernelTable;
use vspec_core::kv::KvType;
use vspec_core::model::config::{FieldNames, TensorShapes};
use vspec_core::model::{
    bind_weights, build_graph_kv, ModelConfig, RawTensor, RopeScaling, WeightView,
};
use vspec_core::safetensors::SafetensorsHeader;
use vspec_core::vspecfile::VspecFile;

/// Where the weights come from.
pub enum Source {
    /// One GGUF file.
    Gguf {
        /// Parsed header.
        header: Box<Gguf>,
    },
    /// One `.vspec` file (checksum verified at open).
    Vspec {
        /// Parsed header.
        header: Box<VspecFile>,
    },
    /// A Hugging Face directory: shards and, per GGUF tensor name, (shard, HF name).
    Hf {
        /// Parsed headers of each shard, in `maps` order.
        shards: Vec<SafetensorsHeader>,
        /// GGUF name → (shard index, Hugging Face name).
        names: HashMap<String, (usize, String)>,
    },
}

/// The bytes of one model file: mapped from disk, or a buffer the embedding program owns.
pub enum ModelBytes {
    /// A read-only private mapping of the file.
    Mapped(Mmap),
    /// Bytes the caller keeps alive for the whole process or longer than every user of the
    /// model (the C API's `vspec_model_open_memory` promises this on its caller's behalf).
    Static(&'static [u8]),
}

impl std::ops::Deref for ModelBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ModelBytes::Mapped(m) => m,
            ModelBytes::Static(b) => b,
        }
    }
}

/// A model opened from disk: mapped bytes, parsed headers, configuration.
pub struct ModelFile {
    /// The path given by the user.
    pub path: PathBuf,
    /// Mapped files (one for GGUF, one per shard for safetensors).
    pub maps: Vec<(PathBuf, ModelBytes)>,
    /// Parsed headers.
    pub source: Source,
    /// Hyper-parameters.
    pub config: ModelConfig,
    /// Tensors held in memory that replace or add to the file's (a rotated model being
    /// converted, see `quantize::rotate`), by GGUF name.
    pub overrides: HashMap<String, OwnedTensor>,
    /// Weights rewritten for the CPU ([`crate::expand`]), made on first use, by GGUF name.
    expanded: OnceLock<HashMap<String, Vec<u8>>>,
    /// Trellis weights interleaved per sixteen rows for the CPU ([`crate::expand::interleave_all`]),
    /// made on first use, by GGUF name.
    interleaved: OnceLock<HashMap<String, Vec<u8>>>,
}

/// A tensor held in memory.
#[derive(Debug, Clone)]
pub struct OwnedTensor {
    /// Storage format.
    pub format: vspec_core::format::Format,
    /// Dimensions in GGUF order (`dims[0]` is the row length).
    pub dims: Vec<u64>,
    /// The tensor's bytes.
    pub data: Vec<u8>,
}

/// Maps a file read-only.
fn map_file(path: &Path) -> Result<Mmap> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: the map is read-only and private to us; like every mmap-based loader we rely on the
    // file not being truncated while mapped (a truncation would fault, not corrupt).
    unsafe { Mmap::map(&f) }.with_context(|| format!("cannot map {}", path.display()))
}

impl ModelFile {
    /// Frees the resident pages of `data` if it lies in one of this model's file mappings
    /// ([`release_pages`]): weights held rewritten were read once to make the rewrite, and
    /// would otherwise stay resident beside it, above what the plan counts.
    fn release(&self, data: &[u8]) {
        for (_, bytes) in &self.maps {
            if let ModelBytes::Mapped(map) = bytes {
                release_pages(map, data);
            }
        }
    }

    /// Opens a Hugging Face model directory, or a file: `.vspec` or GGUF, told apart by their
    /// magic whatever the extension.
    pub fn open(path: &Path) -> Result<ModelFile> {
        if path.is_dir() {
            Self::open_hf(path)
        } else {
            Self::from_bytes(path, ModelBytes::Mapped(map_file(path)?))
        }
    }

    /// A model from the bytes of a GGUF or `.vspec` file (told apart by their magic) that are
    /// already in memory; `name` stands for the file in messages.
    pub fn from_bytes(name: &Path, bytes: ModelBytes) -> Result<ModelFile> {
        if bytes.starts_with(&vspec_core::vspecfile::MAGIC) {
            Self::open_vspec(name, bytes, true)
        } else {
            Self::open_gguf(name, bytes)
        }
    }

    /// [`ModelFile::open`] without verifying a `.vspec` file's checksum, so no tensor data is
    /// read: for planning (`vspec plan`), which needs the headers only. Do not run such a model.
    pub fn open_headers(path: &Path) -> Result<ModelFile> {
        if path.is_dir() {
            return Self::open_hf(path);
        }
        let bytes = ModelBytes::Mapped(map_file(path)?);
        if bytes.starts_with(&vspec_core::vspecfile::MAGIC) {
            Self::open_vspec(path, bytes, false)
        } else {
            Self::open_gguf(path, bytes)
        }
    }

    fn open_vspec(path: &Path, map: ModelBytes, verify: bool) -> Result<ModelFile> {
        if verify {
            vspec_core::vspecfile::verify_checksum(&map)
                .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        }
        let header =
            vspec_core::vspecfile::parse(&map).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        check_vspec_config(&header).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let config = header.config.clone();
        Ok(ModelFile {
            path: path.to_owned(),
            maps: vec![(path.to_owned(), map)],
            source: Source::Vspec {
                header: Box::new(header),
            },
            config,
            overrides: HashMap::new(),
            expanded: OnceLock::new(),
            interleaved: OnceLock::new(),
        })
    }

    fn open_gguf(path: &Path, map: ModelBytes) -> Result<ModelFile> {
        let header =
            vspec_core::gguf::parse(&map).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let mut config =
            ModelConfig::from_gguf(&header).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        if let Some(t) = header.tensor("rope_freqs.weight") {
            let bytes = header
                .tensor_data(&map, t)
                .map_err(|e| anyhow!("{}: {e}", path.display()))?;
            let fmt = t.format.ok_or_else(|| {
                anyhow!(
                    "{}: rope_freqs.weight has an unsupported type",
                    path.display()
                )
            })?;
            let mut factors = vec![0f32; t.n_elements() as usize];
            vspec_core::quant::dequantize_row(fmt, bytes, &mut factors)
                .map_err(|e| anyhow!("{}: tensor 'rope_freqs.weight': {e}", path.display()))?;
            config.rope_scaling = RopeScaling::FreqFactors(factors);
            config
                .validate()
                .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        }
        Ok(ModelFile {
            path: path.to_owned(),
            maps: vec![(path.to_owned(), map)],
            source: Source::Gguf {
                header: Box::new(header),
            },
            config,
            overrides: HashMap::new(),
            expanded: OnceLock::new(),
            interleaved: OnceLock::new(),
        })
    }

    fn open_hf(dir: &Path) -> Result<ModelFile> {
        let cfg_path = dir.join("config.json");
        let cfg_text = std::fs::read_to_string(&cfg_path)
            .with_context(|| format!("{}: cannot read config.json", dir.display()))?;
        let shard_files = hf_shards(dir)?;
        let mut maps = Vec::new();
        let mut shards = Vec::new();
        let mut names = HashMap::new();
        for (i, f) in shard_files.iter().enumerate() {
            let map = map_file(f)?;
            let header = vspec_core::safetensors::parse_header(&map)
                .map_err(|e| anyhow!("{}: {e}", f.display()))?;
            for t in &header.tensors {
                if let Some(g) = vspec_core::model::names::hf_to_gguf(&t.name) {
                    if names.insert(g, (i, t.name.clone())).is_some() {
                        bail!(
                            "{}: tensor '{}' appears in more than one shard",
                            f.display(),
                            t.name
                        );
                    }
                }
            }
            shards.push(header);
            maps.push((f.clone(), ModelBytes::Mapped(map)));
        }
        // safetensors shapes are outermost first; GGUF order is innermost first.
        let shapes: TensorShapes = names
            .iter()
            .filter_map(|(gguf, (shard, hf))| {
                let t = shards[*shard].tensor(hf)?;
                Some((gguf.as_str(), t.shape.iter().rev().copied().collect()))
            })
            .collect();
        let config = ModelConfig::from_hf_json(&cfg_text, &shapes)
            .map_err(|e| anyhow!("{}: {e}", cfg_path.display()))?;
        Ok(ModelFile {
            path: dir.to_owned(),
            maps,
            source: Source::Hf { shards, names },
            config,
            overrides: HashMap::new(),
            expanded: OnceLock::new(),
            interleaved: OnceLock::new(),
        })
    }

    /// The raw tensor `name` (GGUF naming), without touching its data pages.
    pub fn raw_tensor(&self, name: &str) -> vspec_core::Result<Option<RawTensor<'_>>> {
        if let Some(t) = self.overrides.get(name) {
            return Ok(Some(RawTensor {
                format: t.format,
                dims: t.dims.clone(),
                data: &t.data,
            }));
        }
        match &self.source {
            Source::Gguf { header } => {
                let Some(t) = header.tensor(name) else {
                    return Ok(None);
                };
                let data = header.tensor_data(&self.maps[0].1, t)?;
                let format = t
                    .format
                    .ok_or_else(|| vspec_core::Error::UnsupportedFormat {
                        tensor: name.to_string(),
                        format: format!("ggml type {}", t.ggml_type),
                    })?;
                Ok(Some(RawTensor {
                    format,
                    dims: t.dims.clone(),
                    data,
                }))
            }
            Source::Vspec { header } => {
                let Some(t) = header.tensor(name) else {
                    return Ok(None);
                };
                let data = header.tensor_data(&self.maps[0].1, t)?;
                Ok(Some(RawTensor {
                    format: t.format,
                    dims: t.dims.clone(),
                    data,
                }))
            }
            Source::Hf { shards, names } => {
                let Some((shard, hf_name)) = names.get(name) else {
                    return Ok(None);
                };
                let header = &shards[*shard];
                let t = header
                    .tensor(hf_name)
                    .ok_or_else(|| vspec_core::Error::missing(hf_name.clone()))?;
                let format =
                    t.dtype
                        .format()
                        .ok_or_else(|| vspec_core::Error::UnsupportedFormat {
                            tensor: hf_name.clone(),
                            format: t.dtype.name().to_string(),
                        })?;
                let data = header.tensor_data(&self.maps[*shard].1, t)?;
                // safetensors shapes are outermost first; GGUF order is innermost first.
                let dims = t.shape.iter().rev().copied().collect();
                Ok(Some(RawTensor { format, dims, data }))
            }
        }
    }

    /// The model's tokenizer: from GGUF metadata, the `.vspec` header, or tokenizer.json in the
    /// directory.
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        let tokenizer = self.build_tokenizer();
        if !matches!(self.source, Source::Gguf { .. }) {
            // Parsing a tokenizer.json buffers its whole model (~16 MB for SmolLM2's) and frees
            // it, but glibc keeps freed heap resident: ~10 MiB more peak RSS than a GGUF file's
            // tokenizer, above the plan's fixed overhead.
            return_free_heap();
        }
        tokenizer
    }

    fn build_tokenizer(&self) -> Result<Tokenizer> {
        match &self.source {
            Source::Gguf { header } => Tokenizer::from_gguf(header)
                .with_context(|| format!("{}: tokenizer", self.path.display())),
            Source::Vspec { header } => Tokenizer::from_parts(&header.tokenizer)
                .with_context(|| format!("{}: tokenizer", self.path.display())),
            Source::Hf { .. } => {
                let tok = Tokenizer::from_hf_dir(&self.path)?;
                // Padding the embedding past the tokenizer is common (Qwen2.5); token ids past the
                // embedding would index beyond it.
                if tok.vocab_size() > self.config.vocab {
                    bail!(
                        "{}: tokenizer.json has {} tokens, more than config.json field \
                         'vocab_size' ({} embedding rows)",
                        self.path.display(),
                        tok.vocab_size(),
                        self.config.vocab
                    );
                }
                Ok(tok)
            }
        }
    }

    /// The graph for `limits` with weights bound (formats recorded from the headers), with an
    /// f32 KV cache.
    pub fn bind(&self, limits: Limits) -> Result<(Graph, Vec<Option<WeightView<'_>>>)> {
        self.bind_kv(limits, KvType::F32)
    }

    /// The graph and weight views, bound only to read the weights (shapes, formats, bytes): the
    /// smallest limits, since nothing will run.
    pub fn bind_weights(&self) -> Result<(Graph, Vec<Option<WeightView<'_>>>)> {
        self.bind(Limits {
            max_ctx: 1,
            max_tokens: 1,
            all_logits: false,
        })
    }

    /// [`ModelFile::bind`] with a KV cache of `kv_type`.
    pub fn bind_kv(
        &self,
        limits: Limits,
        kv_type: KvType,
    ) -> Result<(Graph, Vec<Option<WeightView<'_>>>)> {
        let mut graph = build_graph_kv(&self.config, limits, kv_type)
            .map_err(|e| anyhow!("{}: {e}", self.path.display()))?;
        let lookup = |name: &str| self.raw_tensor(name);
        let weights = bind_weights(&mut graph, &lookup)
            .map_err(|e| anyhow!("{}: {e}", self.path.display()))?;
        Ok((graph, weights))
    }

    /// [`ModelFile::bind_kv`] as a CPU session with `kernels` runs it under `policy`: the
    /// weights [`crate::expand`] rewrites carry the new format in the graph (so the plan counts
    /// their bytes) and views on the rewritten bytes, made on first use and kept with the
    /// model. A model with tensors held in memory (`overrides`, a conversion) is never
    /// rewritten.
    pub fn bind_cpu(
        &self,
        limits: Limits,
        kv_type: KvType,
        kernels: &KernelTable,
        policy: Expansion,
    ) -> Result<(Graph, Vec<Option<WeightView<'_>>>, Rewritten)> {
        let (mut graph, mut views) = self.bind_kv(limits, kv_type)?;
        let rewrites = self.rewrites(&graph, kernels, policy);
        let rewritten = Rewritten::count(&graph, &views, &rewrites);
        if !rewrites.is_empty() {
            let store = self
                .expanded
                .get_or_init(|| expand::expand_all(&graph, &views, &|d| self.release(d)));
            expand::apply_to_views(&graph, &mut views, &rewrites, store)
                .map_err(|e| anyhow!("{}: {e}", self.path.display()))?;
            expand::apply_to_graph(&mut graph, &rewrites);
        }
        if self.overrides.is_empty() && expand::interleave_enabled()? {
            let picked = expand::interleave_planned(&graph, &views, kernels);
            if !picked.is_empty() {
                let store = self.interleaved.get_or_init(|| {
                    expand::interleave_all(&graph, &views, &picked, &|d| self.release(d))
                });
                expand::apply_interleaved(&graph, &mut views, &picked, store)
                    .map_err(|e| anyhow!("{}: {e}", self.path.display()))?;
            }
        }
        Ok((graph, views, rewritten))
    }

    /// The graph of [`ModelFile::bind_cpu`], rewriting no bytes: what plans are made from.
    pub fn plan_graph_cpu(
        &self,
        limits: Limits,
        kv_type: KvType,
        kernels: &KernelTable,
        policy: Expansion,
    ) -> Result<Graph> {
        let (mut graph, _) = self.bind_kv(limits, kv_type)?;
        self.record_cpu_formats(&mut graph, kernels, policy);
        Ok(graph)
    }

    /// Records in a graph bound by [`ModelFile::bind_kv`] the formats a CPU session with
    /// `kernels` holds its weights in under `policy` (what [`ModelFile::bind_cpu`] does to its
    /// graph), so that a plan of it counts those bytes.
    pub fn record_cpu_formats(&self, graph: &mut Graph, kernels: &KernelTable, policy: Expansion) {
        let rewrites = self.rewrites(graph, kernels, policy);
        expand::apply_to_graph(graph, &rewrites);
    }

    fn rewrites(
        &self,
        graph: &Graph,
        kernels: &KernelTable,
        policy: Expansion,
    ) -> Vec<(usize, vspec_core::format::Format)> {
        if self.overrides.is_empty() {
            expand::planned(graph, kernels, policy)
        } else {
            Vec::new()
        }
    }

    /// The GGUF header, when the model is a GGUF file.
    pub fn gguf(&self) -> Option<&Gguf> {
        match &self.source {
            Source::Gguf { header } => Some(header),
            Source::Vspec { .. } | Source::Hf { .. } => None,
        }
    }

    /// The `.vspec` header (metadata, tensor list, checksum), when the model is a `.vspec` file.
    pub fn vspec(&self) -> Option<&VspecFile> {
        match &self.source {
            Source::Vspec { header } => Some(header),
            Source::Gguf { .. } | Source::Hf { .. } => None,
        }
    }
}

/// Checks a `.vspec` header's config against its own tensors and tokenizer (the core's parser has
/// checked the values themselves), naming the header's fields.
fn check_vspec_config(header: &VspecFile) -> vspec_core::Result<()> {
    let shapes: TensorShapes = header
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.dims.clone()))
        .collect();
    header.config.check_tensors(&shapes, &FieldNames::vspec())?;
    let tokens = header.tokenizer.vocab_size as usize;
    if tokens > header.config.vocab {
        return Err(vspec_core::Error::invalid(
            "tokenizer.vocab_size",
            format!(
                "{tokens} tokens, more than the config's vocab of {}",
                header.config.vocab
            ),
        ));
    }
    Ok(())
}

/// The safetensors files of a Hugging Face directory: those named by `model.safetensors.index.json`
/// when present, else every `*.safetensors`, sorted.
fn hf_shards(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    let mut files: Vec<PathBuf> = if index.exists() {
        let text = std::fs::read_to_string(&index)
            .with_context(|| format!("cannot read {}", index.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: invalid JSON", index.display()))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| anyhow!("{}: missing 'weight_map'", index.display()))?;
        let mut names: Vec<String> = map
            .values()
            .filter_map(|s| s.as_str().map(String::from))
            .collect();
        names.sort();
        names.dedup();
        for n in &names {
            if n.contains('/') || n.contains('\\') || n.starts_with('.') {
                bail!(
                    "{}: shard name '{n}' must be a plain file name",
                    index.display()
                );
            }
        }
        names.into_iter().map(|n| dir.join(n)).collect()
    } else {
        let mut v = Vec::new();
        for e in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let p = e?.path();
            if p.extension().and_then(|s| s.to_str()) == Some("safetensors") {
                v.push(p);
            }
        }
        v
    };
    files.sort();
    if files.is_empty() {
        bail!("{}: no *.safetensors files", dir.display());
    }
    Ok(files)
}
