//! Space-time diagrams of trace files (`keel-sim render FILE`): where researchers read a failure.
//! A self-contained HTML page with an inline SVG, one lane per node, time left to right, message
//! arrows, lost messages, shaded faults, roles and terms, client operations; bounded by a time
//! window and a maximum number of arrows, with what was cut said on the page.
//!
//! Data flow: [`render`] reads the [`Diagram`] out of a parsed trace (`model.rs`) and draws it
//! (`svg.rs`). The output depends only on the trace and the options: rendering twice gives the
//! same bytes.

pub mod model;
pub mod svg;

pub use model::{Diagram, RenderOptions};

use crate::pure::header::TraceFile;

/// The HTML page of `trace` under `options`, and the diagram it drew (for reports and tests).
pub fn render(trace: &TraceFile, options: &RenderOptions) -> (String, Diagram) {
    let diagram = Diagram::from_trace(trace, options);
    (svg::html(&diagram, options.width_px), diagram)
}
