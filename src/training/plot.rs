//! A dependency-free SVG of the training curve (train loss and dev accuracy per epoch).

use crate::error::Result;
use crate::training::EpochMetrics;
use std::fmt::Write;
use std::path::Path;

/// Write `loss.svg`: train loss (left axis) and dev accuracy (right axis, 0–1) per epoch.
pub fn loss_curve_svg(epochs: &[EpochMetrics], path: &Path) -> Result<()> {
    let (w, h, pad) = (640.0, 360.0, 50.0);
    let n = epochs.len().max(2) as f64;
    let max_loss = epochs.iter().map(|e| e.train_loss).fold(1e-9, f64::max);
    let x = |i: usize| pad + (w - 2.0 * pad) * ((i as f64) / (n - 1.0).max(1.0));
    let y = |v: f64, top: f64| h - pad - (h - 2.0 * pad) * (v / top).clamp(0.0, 1.0);
    let line = |vals: Vec<f64>, top: f64| vals.iter().enumerate().map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v, top))).collect::<Vec<_>>().join(" ");
    let mut s = String::new();
    let _ = write!(s, r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"##);
    let _ = write!(s, r##"<rect width="100%" height="100%" fill="white"/><text x="{pad}" y="24" font-size="14">train loss (blue, max {max_loss:.3}) and dev accuracy (orange, 0-1) per epoch</text>"##);
    let _ = write!(s, r##"<line x1="{pad}" y1="{}" x2="{}" y2="{}" stroke="black"/>"##, h - pad, w - pad, h - pad);
    let _ = write!(s, r##"<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{}" stroke="black"/>"##, h - pad);
    let _ = write!(s, r##"<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{}"/>"##, line(epochs.iter().map(|e| e.train_loss).collect(), max_loss));
    let _ = write!(s, r##"<polyline fill="none" stroke="#ff7f0e" stroke-width="2" points="{}"/>"##, line(epochs.iter().map(|e| e.dev_accuracy).collect(), 1.0));
    for (i, e) in epochs.iter().enumerate() {
        let _ = write!(s, r##"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"##, x(i), h - pad + 16.0, e.epoch);
    }
    s.push_str("</svg>\n");
    crate::fs::write_atomic(path, s.as_bytes())
}
