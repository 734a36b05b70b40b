//! `keel-sim render FILE [-o OUT.html]`: draws a trace file as a self-contained HTML page with an
//! inline SVG space-time diagram (a lane per node, message arrows, lost messages, shaded faults,
//! roles and terms, client operations). `--from-ms` / `--to-ms` choose a window and
//! `--max-arrows` bounds the page (the latest arrows are kept); what was cut is said on the page
//! and here. Exit code 0 when written, 2 when the trace cannot be read or the page cannot be
//! written.

use std::path::PathBuf;
use std::process::ExitCode;

use keel_sim::render::{render, RenderOptions};

use crate::replay::read_trace;

/// Arguments of `keel-sim render`.
#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// The trace file.
    pub file: PathBuf,
    /// Where to write the page (default: the trace's name with `.html`).
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Start of the window to draw, in simulated milliseconds.
    #[arg(long, default_value_t = 0)]
    pub from_ms: u64,
    /// End of the window (default: the end of the run).
    #[arg(long)]
    pub to_ms: Option<u64>,
    /// Most message arrows drawn (and, separately, most lost messages): the latest of the window;
    /// the earlier ones are counted.
    #[arg(long, default_value_t = 5_000)]
    pub max_arrows: usize,
    /// Width of the time axis in pixels.
    #[arg(long, default_value_t = 2_400)]
    pub width: u32,
}

/// Runs `keel-sim render`.
pub fn run(arguments: &RenderArgs) -> ExitCode {
    let file = match read_trace(&arguments.file, "render") {
        Ok(file) => file,
        Err(code) => return code,
    };
    let options = RenderOptions {
        from_ms: arguments.from_ms,
        to_ms: arguments.to_ms,
        max_arrows: arguments.max_arrows,
        max_drops: arguments.max_arrows,
        width_px: arguments.width.clamp(200, 200_000),
    };
    let (page, diagram) = render(&file, &options);
    let output = arguments.output.clone().unwrap_or_else(|| arguments.file.with_extension("html"));
    if let Err(error) = std::fs::write(&output, page) {
        eprintln!("keel-sim render: cannot write {}: {error}", output.display());
        return ExitCode::from(2);
    }
    println!("wrote {}: {}", output.display(), diagram.summary());
    if let Some(note) = diagram.cut_note() {
        println!("cut: {note}");
    }
    ExitCode::SUCCESS
}
