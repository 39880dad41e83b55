//! `nydus-image`: build, check, inspect, unpack and export RAFS images.

mod cli;
mod progress;
mod upload;

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use nydus_builder::blob::ChunkOptions;
use nydus_builder::chunkdict::parse_chunk_dict_arg;
use nydus_builder::create::{create, CreateOptions, CreateReport};
use nydus_builder::image::load;
use nydus_builder::inspect::{self, Inspector};
use nydus_builder::merge::{merge, MergeOptions};
use nydus_builder::{export, unpack};

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(&cli) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed stdout (e.g. piped into `head`) is not a failure.
            if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cli: &Cli) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .with_context(|| format!("invalid --log-level {:?} (use trace, debug, info, warn or error)", cli.log_level))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    match &cli.log_file {
        Some(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("cannot open log file {}", p.display()))?;
            builder.with_ansi(false).with_writer(std::sync::Mutex::new(f)).init();
        }
        None => builder.with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr).init(),
    }
    Ok(())
}

fn write_json(path: Option<&Path>, v: &impl serde::Serialize) -> Result<()> {
    if let Some(p) = path {
        let s = serde_json::to_string_pretty(v)?;
        std::fs::write(p, s + "\n").with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(())
}

/// Check that the blob of an upload can be read back, and give a build
/// without --blob/--blob-dir a temporary blob directory next to the bootstrap.
fn upload_blob_dir(a: &cli::CreateArgs) -> Result<Option<tempfile::TempDir>> {
    if let Some(b) = &a.blob {
        if std::fs::metadata(b).is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type())) {
            bail!(
                "--blob {} is a FIFO: a blob written to a pipe cannot be uploaded; use a file or --blob-dir",
                b.display()
            );
        }
    }
    if a.blob.is_some() || a.blob_dir.is_some() {
        return Ok(None);
    }
    let Some(boot) = &a.bootstrap else {
        bail!("no bootstrap output: pass --bootstrap FILE (or --blob-dir DIR)");
    };
    let dir = match boot.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => ".".into(),
    };
    let t = tempfile::Builder::new()
        .prefix(".nydus-blobs-")
        .tempdir_in(&dir)
        .with_context(|| format!("cannot create a temporary blob directory in {}", dir.display()))?;
    Ok(Some(t))
}

/// Upload the blob this build wrote. On failure the blob stays where it is
/// (a temporary blob directory is kept and named).
fn upload_built(t: &upload::Target, report: &CreateReport, temp: Option<tempfile::TempDir>) -> Result<()> {
    let new_ids = &report.blobs[report.blobs.len().saturating_sub(report.blob_paths.len())..];
    if new_ids.is_empty() {
        tracing::info!(backend = t.name(), "the image has no new blob; nothing to upload");
    }
    for (id, path) in new_ids.iter().zip(&report.blob_paths) {
        if let Err(e) = t.upload(id, path) {
            let e = match temp {
                Some(d) => {
                    let kept = d.keep();
                    anyhow::anyhow!("{e:#} (the blob stays in {})", kept.display())
                }
                None => e,
            };
            return Err(e);
        }
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Create(a) => {
            let target = upload::target(&a.upload)?;
            let temp_blobs = match &target {
                Some(_) => upload_blob_dir(&a)?,
                None => None,
            };
            let opts = CreateOptions {
                source: a.source.clone(),
                source_type: a.source()?,
                bootstrap: a.bootstrap.clone(),
                blob: a.blob.clone(),
                blob_dir: a.blob_dir.clone().or_else(|| temp_blobs.as_ref().map(|t| t.path().to_path_buf())),
                blob_id: a.blob_id.clone(),
                chunk: ChunkOptions {
                    chunk_size: a.chunk_size()?,
                    compressor: a.compressor.into(),
                    digester: a.digester.into(),
                    threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
                },
                whiteout: a.whiteout_spec.into(),
                parent_bootstrap: a.parent_bootstrap.clone(),
                chunk_dict: a.chunk_dict.as_deref().map(parse_chunk_dict_arg).transpose()?,
            };
            if a.fs_version != 6 {
                bail!("--fs-version {}: only RAFS v6 images can be written", a.fs_version);
            }
            let bar = progress::Bar::bytes("building");
            let staged = create(&opts, &|done, total, files| bar.update(done, total, files)).context("build failed")?;
            bar.finish();
            if let Some(j) = &a.output_json {
                if j.is_dir() {
                    bail!("cannot write report {}: is a directory", j.display());
                }
            }
            write_json(a.output_json.as_deref(), &staged.report)?;
            let report = match staged.publish() {
                Ok(r) => r,
                Err(e) => {
                    if let Some(j) = &a.output_json {
                        let _ = std::fs::remove_file(j);
                    }
                    return Err(anyhow::Error::new(e).context("build failed"));
                }
            };
            tracing::info!(
                bootstrap = %report.bootstrap.display(),
                blobs = ?report.blobs,
                inodes = report.inodes,
                chunks = report.chunks,
                dedup_chunks = report.dedup_chunks,
                "image built"
            );
            match target {
                Some(t) => upload_built(&t, &report, temp_blobs),
                None => Ok(()),
            }
        }
        Command::Compact(a) => run_compact(&a),
        Command::Merge(a) => {
            let opts = MergeOptions {
                sources: a.sources.clone(),
                bootstrap: a.bootstrap.clone(),
                parent_bootstrap: a.parent_bootstrap.clone(),
                chunk_dict: a.chunk_dict.as_deref().map(parse_chunk_dict_arg).transpose()?,
                blob_digests: cli::split_list(&a.blob_digests),
                original_blob_ids: cli::split_list(&a.original_blob_ids),
                blob_sizes: cli::parse_sizes(&a.blob_sizes)?,
                whiteout: a.whiteout_spec.into(),
            };
            let report = merge(&opts).context("merge failed")?;
            tracing::info!(bootstrap = %report.bootstrap.display(), blobs = ?report.blobs, inodes = report.inodes, "bootstraps merged");
            write_json(a.output_json.as_deref(), &report)
        }
        Command::Check(a) => {
            let path = a.image.path()?;
            let boot = load(&path)?;
            let blobs = match &a.blob_dir {
                Some(d) => Some(inspect::open_blobs(&boot, d)?),
                None => None,
            };
            let mut out = std::io::stdout().lock();
            let mut werr = None;
            let report = inspect::check(&path, &boot, blobs.as_ref(), |p, ino| {
                if a.verbose && werr.is_none() {
                    werr = writeln!(out, "{}", inspect::inode_line(p, ino)).err();
                }
            })?;
            if let Some(e) = werr {
                return Err(e.into());
            }
            writeln!(
                out,
                "{}: RAFS v6 image is valid: {} names, {} inodes, chunk size {:#x}, {} blob(s)",
                path.display(),
                report.inodes,
                report.unique_inodes,
                report.chunk_size,
                report.blobs.len()
            )?;
            for b in &report.blobs {
                writeln!(
                    out,
                    "  blob {} ({} chunks, {} bytes, {})",
                    b.blob_id, b.chunk_count, b.compressed_size, b.compressor
                )?;
            }
            if a.blob_dir.is_some() {
                writeln!(out, "  {} chunks read and verified", report.chunks_verified)?;
            }
            write_json(a.output_json.as_deref(), &report)
        }
        Command::Stat(a) => {
            let boot = load(&a.bootstrap)?;
            let s = inspect::stat(&boot).with_context(|| a.bootstrap.display().to_string())?;
            std::io::stdout().lock().write_all(nydus_builder::stat::render(&s).as_bytes())?;
            write_json(a.output_json.as_deref(), &s)
        }
        Command::Inspect(a) => {
            let path = a.image.path()?;
            let mut insp = Inspector::new(load(&path)?);
            if let Some(cmd) = a.request {
                let v = insp.run(&cmd).map_err(anyhow::Error::msg)?;
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let stdin = std::io::stdin();
            let tty = stdin.is_terminal();
            if tty {
                eprintln!("{}", inspect::INSPECT_HELP);
            }
            loop {
                if tty {
                    eprint!("Inspecting RAFS :> ");
                }
                let mut line = String::new();
                if stdin.lock().read_line(&mut line)? == 0 {
                    break;
                }
                let line = line.trim();
                if line == "exit" || line == "quit" || line == "q" {
                    break;
                }
                match insp.run(line) {
                    Ok(v) => println!("{}", serde_json::to_string_pretty(&v)?),
                    Err(m) => eprintln!("error: {m}"),
                }
            }
            Ok(())
        }
        Command::Unpack(a) => {
            let path = a.image.path()?;
            let rep =
                unpack::unpack(&path, a.blob.as_deref(), a.blob_dir.as_deref(), &a.output).context("unpack failed")?;
            tracing::info!(entries = rep.entries, bytes = rep.bytes, skipped_sockets = rep.skipped_sockets, output = %a.output.display(), "unpacked");
            Ok(())
        }
        Command::Export(a) => {
            if !a.block {
                bail!("only block export is supported: pass --block");
            }
            let path = a.bootstrap.clone();
            let output = a.output.clone().unwrap_or_else(|| {
                let mut p = path.clone().into_os_string();
                p.push(".disk");
                p.into()
            });
            let bar = progress::Bar::bytes("exporting");
            let rep = export::export_block(&path, a.blob_dir.as_deref(), a.blob.as_deref(), &output, &|d, t| {
                bar.update(d, t, 0)
            })
            .context("export failed")?;
            bar.finish();
            tracing::info!(output = %rep.output.display(), size = rep.size, blobs = rep.blobs, "block disk exported");
            Ok(())
        }
    }
}

/// `compact`: resolve compact.json and the flags, run, print a summary.
fn run_compact(a: &cli::CompactArgs) -> Result<()> {
    use nydus_builder::compact::{compact, CompactConfig, CompactOptions};
    let mut config = CompactConfig::default();
    if let Some(p) = &a.config {
        let text = std::fs::read_to_string(p).with_context(|| format!("cannot read --config {}", p.display()))?;
        let (c, warnings) = CompactConfig::from_json(&text, &p.display().to_string())?;
        for w in warnings {
            tracing::warn!("{w}");
        }
        config = c;
    }
    config.min_used_ratio = a.min_used_ratio.unwrap_or(config.min_used_ratio);
    if config.min_used_ratio > 100 {
        bail!("--min-used-ratio {}: a percentage from 0 to 100", config.min_used_ratio);
    }
    config.compact_blob_size = a.compact_blob_size.unwrap_or(config.compact_blob_size);
    config.max_compact_size = a.max_compact_size.unwrap_or(config.max_compact_size);
    config.layers_to_compact = a.layers_to_compact.unwrap_or(config.layers_to_compact);
    config.blobs_dir = a.blob_dir.clone().or(config.blobs_dir);
    let backend = match a.backend_type {
        None => None,
        Some(kind) => {
            let text = match (&a.backend_config, &a.backend_config_file) {
                (Some(s), _) => s.clone(),
                (None, Some(p)) => std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read --backend-config-file {}", p.display()))?,
                (None, None) => bail!("--backend-type needs --backend-config JSON or --backend-config-file FILE"),
            };
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("the {} backend settings are not valid JSON: {e}", kind.name()))?;
            let (cfg, warnings) = nydus_storage::config::backend_from_json(kind.name(), &json)?;
            for w in warnings {
                tracing::warn!("backend config: {w}");
            }
            Some(nydus_storage::backend::new_backend(&cfg)?)
        }
    };
    let opts = CompactOptions {
        output_bootstrap: a.output_bootstrap.clone().unwrap_or_else(|| a.bootstrap.with_extension("bootstrap.compact")),
        bootstrap: a.bootstrap.clone(),
        config,
        chunk_dict: a.chunk_dict.as_deref().map(parse_chunk_dict_arg).transpose()?,
        backend,
    };
    let bar = progress::Bar::bytes("compacting");
    let r = compact(&opts, &|done, total| bar.update(done, total, 0)).context("compact failed")?;
    bar.finish();
    let input = a.bootstrap.display();
    let figures =
        format!("blobs {} -> {}, bytes {} -> {}", r.blobs_before, r.blobs_after, r.bytes_before, r.bytes_after);
    match &r.bootstrap {
        None => println!(
            "{input}: {} blob(s), fewer than layers_to_compact {}: not compacted, nothing written",
            r.blobs_before, opts.config.layers_to_compact
        ),
        Some(out) if !r.compacted => {
            println!("{input}: nothing to compact ({figures}); {} is a copy of it", out.display())
        }
        Some(out) => println!(
            "compacted {input} -> {}: {figures}; {} new blob(s) in {}, {} blob(s) rewritten, {} dropped, \
             {} chunks ({} bytes) copied, {} deduplicated",
            out.display(),
            r.new_blobs.len(),
            opts.config.blobs_dir.as_deref().unwrap_or(Path::new(".")).display(),
            r.rewritten_blobs.len(),
            r.dropped_blobs.len(),
            r.copied_chunks,
            r.copied_bytes,
            r.dedup_chunks
        ),
    }
    write_json(a.output_json.as_deref(), &r)
}
