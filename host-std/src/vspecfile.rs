//! Writing `.vspec` files (the layout is documented in [`vspec_core::vspecfile`]).
//!
//! The writer streams: tensors arrive one at a time (a converter quantizes them one by one) and
//! go straight to disk while their XXH64 is computed, so only one tensor is in memory at a time.
//! The data section is written first, after a reserved gap; the header, which needs the complete
//! tensor list, is written into the gap at the end (or, if it outgrew the gap, into a fresh file
//! followed by an in-kernel copy of the data). Everything goes to a temporary file
//! `.{name}.tmp-{pid}-{n}` in the target directory that is fsynced and renamed over the target
//! only when complete; on any error, or if the writer is dropped unfinished, the temporary file
//! is removed and no partial output is left. A writer that was killed cannot remove its file; the
//! next write to the same target removes it once its process is gone.

use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use vspec_core::model::ModelConfig;
use vspec_core::vspecfile::{self as vf, TensorPlacer, TokenizerParts, Xxh64};
use vspec_core::Format;

/// Bytes reserved for the tensor list beyond the header's fixed part (config, tokenizer,
/// metadata): about 500 tensor entries. A larger list still works, at the cost of one copy.
const TENSOR_LIST_RESERVE: u64 = 64 * 1024;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary file that is removed when dropped, unless [`Temp::keep`] was called.
struct Temp {
    path: PathBuf,
    armed: bool,
}

impl Temp {
    fn create(target: &Path) -> Result<(Temp, File)> {
        let name = target
            .file_name()
            .ok_or_else(|| anyhow!("{}: not a file path", target.display()))?
            .to_string_lossy()
            .into_owned();
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        remove_stale_temps(&dir, &name);
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| {
                format!(
                    "cannot write {}: cannot create a file in {}",
                    target.display(),
                    dir.display()
                )
            })?;
        Ok((Temp { path, armed: true }, file))
    }

    fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Removes the temporary files that writers of `name` killed before they finished left in `dir`
/// (`.{name}.tmp-{pid}-{n}`, or `.{name}.tmp-{pid}`), but only those whose process is known to be
/// gone: a live process may still be writing its file, and this process's own files belong to
/// writers that are still running or will clean up themselves. Best effort: a file that cannot be
/// listed or removed is left.
fn remove_stale_temps(dir: &Path, name: &str) {
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(temp_owner_pid)
        else {
            continue;
        };
        // `file_type` does not follow links: only plain files that we could have written go.
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if is_file && pid != std::process::id() && process_is_gone(pid) {
            let path = entry.path();
            if std::fs::remove_file(&path).is_ok() {
                log::warn!(
                    "removed {}, left by an unfinished write (process {pid} no longer runs)",
                    path.display()
                );
            }
        }
    }
}

/// The writer's process id in a temporary file's suffix `{pid}-{n}` or `{pid}` (digits only).
fn temp_owner_pid(suffix: &str) -> Option<u32> {
    let (pid, counter) = suffix.split_once('-').unwrap_or((suffix, "0"));
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(pid) || !all_digits(counter) {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` is known not to exist. On Linux, a process exists exactly when
/// `/proc/{pid}` does (when procfs is mounted at all); elsewhere we cannot tell cheaply and say
/// no, which keeps the file.
fn process_is_gone(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new("/proc/self").exists() && !Path::new(&format!("/proc/{pid}")).exists()
    } else {
        false
    }
}

/// A `.vspec` file being written. Add tensors with [`VspecWriter::add_tensor`] in the order they
/// should be stored, then call [`VspecWriter::finish`]. Dropping it unfinished removes the
/// temporary file.
pub struct VspecWriter {
    target: PathBuf,
    temp: Temp,
    out: BufWriter<File>,
    config: ModelConfig,
    tokenizer: TokenizerParts,
    metadata: BTreeMap<String, String>,
    placer: TensorPlacer,
    data_hash: Xxh64,
    data_offset: u64,
}

impl VspecWriter {
    /// Starts writing `path` (created or replaced when [`VspecWriter::finish`] succeeds).
    pub fn create(
        path: &Path,
        config: &ModelConfig,
        tokenizer: &TokenizerParts,
        metadata: &BTreeMap<String, String>,
    ) -> Result<VspecWriter> {
        Self::create_with_reserve(path, config, tokenizer, metadata, TENSOR_LIST_RESERVE)
    }

    /// [`VspecWriter::create`] with `reserve` bytes set aside for the tensor list (tests use a
    /// tiny one to exercise the path where the header outgrows its gap).
    #[doc(hidden)]
    pub fn create_with_reserve(
        path: &Path,
        config: &ModelConfig,
        tokenizer: &TokenizerParts,
        metadata: &BTreeMap<String, String>,
        reserve: u64,
    ) -> Result<VspecWriter> {
        let ctx = || format!("writing {}", path.display());
        // The header without tensors: validates config and tokenizer, and sizes the gap.
        let fixed = vf::encode_header(config, tokenizer, metadata, &[], 0)
            .map_err(|e| anyhow!("{e}"))
            .with_context(ctx)?;
        let data_offset = vf::min_data_offset(fixed.len() as u64 + reserve)
            .ok_or_else(|| anyhow!("header too large"))
            .with_context(ctx)?;
        let (temp, mut file) = Temp::create(path)?;
        file.seek(SeekFrom::Start(data_offset))
            .with_context(|| format!("seeking in {}", temp.path.display()))?;
        Ok(VspecWriter {
            target: path.to_path_buf(),
            temp,
            out: BufWriter::with_capacity(1 << 20, file),
            config: config.clone(),
            tokenizer: tokenizer.clone(),
            metadata: metadata.clone(),
            placer: TensorPlacer::new(),
            data_hash: Xxh64::new(0),
            data_offset,
        })
    }

    /// Appends one tensor; `data` must be exactly what `format` needs for `dims` (GGUF order).
    pub fn add_tensor(
        &mut self,
        name: &str,
        format: Format,
        dims: &[u64],
        data: &[u8],
    ) -> Result<()> {
        let pad = self
            .placer
            .place(name, format, dims, data.len() as u64)
            .map_err(|e| anyhow!("writing {}: {e}", self.target.display()))?;
        let zeros = [0u8; vf::ALIGNMENT as usize];
        let pad = &zeros[..pad as usize];
        for part in [pad, data] {
            self.data_hash.update(part);
            self.out
                .write_all(part)
                .with_context(|| format!("writing {}", self.temp.path.display()))?;
        }
        Ok(())
    }

    /// Writes the header and trailer, fsyncs, and renames the file into place.
    pub fn finish(self) -> Result<()> {
        let VspecWriter {
            target,
            temp,
            out,
            config,
            tokenizer,
            metadata,
            placer,
            data_hash,
            data_offset,
        } = self;
        let io = |what: &str| format!("{what} {}", temp.path.display());
        let header = vf::encode_header(
            &config,
            &tokenizer,
            &metadata,
            placer.entries(),
            placer.data_len(),
        )
        .map_err(|e| anyhow!("writing {}: {e}", target.display()))?;
        let data_len = placer.data_len();
        let data_hash = data_hash.digest();
        let mut file = out
            .into_inner()
            .map_err(|e| anyhow!("{}: {}", io("writing"), e.error()))?;
        let need =
            vf::min_data_offset(header.len() as u64).ok_or_else(|| anyhow!("header too large"))?;
        if need <= data_offset {
            let head = head_bytes(&header, data_offset, data_len)?;
            let sum = vf::combine_checksum(&head, data_hash);
            file.write_all(&vf::trailer(sum))
                .with_context(|| io("writing"))?;
            file.seek(SeekFrom::Start(0))
                .with_context(|| io("seeking in"))?;
            file.write_all(&head).with_context(|| io("writing"))?;
            file.sync_all().with_context(|| io("syncing"))?;
            drop(file);
            commit(temp, &target)
        } else {
            // The tensor list outgrew the reserved gap: write a fresh file with the exact gap and
            // copy the data section over (copy_file_range where the OS has it).
            let (temp2, mut file2) = Temp::create(&target)?;
            let head = head_bytes(&header, need, data_len)?;
            let sum = vf::combine_checksum(&head, data_hash);
            file2
                .write_all(&head)
                .with_context(|| format!("writing {}", temp2.path.display()))?;
            file.seek(SeekFrom::Start(data_offset))
                .with_context(|| io("seeking in"))?;
            let copied = std::io::copy(&mut (&mut file).take(data_len), &mut file2)
                .with_context(|| format!("copying into {}", temp2.path.display()))?;
            if copied != data_len {
                bail!(
                    "{}: copied {copied} of {data_len} data bytes",
                    io("reading")
                );
            }
            file2
                .write_all(&vf::trailer(sum))
                .with_context(|| format!("writing {}", temp2.path.display()))?;
            file2
                .sync_all()
                .with_context(|| format!("syncing {}", temp2.path.display()))?;
            drop((file, file2, temp));
            commit(temp2, &target)
        }
    }
}

/// Preamble, header and zero padding up to `data_offset`.
fn head_bytes(header: &[u8], data_offset: u64, data_len: u64) -> Result<Vec<u8>> {
    let len = usize::try_from(data_offset).map_err(|_| anyhow!("header too large"))?;
    let mut head = Vec::with_capacity(len);
    head.extend_from_slice(&vf::preamble(header.len() as u64, data_offset, data_len));
    head.extend_from_slice(header);
    head.resize(len, 0);
    Ok(head)
}

/// Renames the finished temporary file over `target` and syncs the directory.
fn commit(temp: Temp, target: &Path) -> Result<()> {
    std::fs::rename(&temp.path, target).with_context(|| {
        format!(
            "cannot rename {} to {}",
            temp.path.display(),
            target.display()
        )
    })?;
    temp.keep();
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Best effort: makes the rename durable on filesystems that need it.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// One tensor for [`write_vspec`]: name (GGUF naming), format, dims (GGUF order), bytes.
pub type TensorItem<B> = (String, Format, Vec<u64>, B);

/// Writes a `.vspec` file at `path` from tensors produced one at a time. A producer error (an
/// `Err` item) or any I/O error aborts the write and leaves nothing at `path` (an existing
/// file there is left untouched).
pub fn write_vspec<I, B>(
    path: &Path,
    config: &ModelConfig,
    tokenizer: &TokenizerParts,
    metadata: &BTreeMap<String, String>,
    tensors: I,
) -> Result<()>
where
    I: IntoIterator<Item = Result<TensorItem<B>>>,
    B: AsRef<[u8]>,
{
    let mut w = VspecWriter::create(path, config, tokenizer, metadata)?;
    for item in tensors {
        let (name, format, dims, data) =
            item.with_context(|| format!("writing {}", path.display()))?;
        w.add_tensor(&name, format, &dims, data.as_ref())?;
    }
    w.finish()
}

/// Whether the file at `path` starts with the `.vspec` magic.
pub fn is_vspec(path: &Path) -> bool {
    let mut magic = [0u8; 8];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map(|_| magic == vf::MAGIC)
        .unwrap_or(false)
}
