//! The human half of a run's output: `latency.png`, `rate.png` and `index.html`,
//! written beside `history.jsonl` and `results.json` so one directory tells the
//! whole story of a run.
//!
//! Nemesis convention: each action is a nemesis `invoke` then an `info` (or `ok`)
//! completion with f = `start-<fault>` or `stop-<fault>`. A fault period runs from
//! the completion of `start-X` to the completion of the next `stop-X`, or to the
//! end of the history if it was never stopped. Fault kinds are not interpreted,
//! so new kinds show up without changes here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::error::Error;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, Context as _};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use serde_json::Value;

use crate::history::{pair, Op, OpType, Outcome, Process};
use crate::results::{Results, Validity};

/// Everything the report shows; the runner fills it once the checkers are done.
pub struct ReportInput<'a> {
    /// e.g. "register, nemesis partition,kill, 60 s".
    pub title: &'a str,
    /// The command line that produced the run.
    pub command: &'a str,
    pub ops: &'a [Op],
    pub results: &'a Results,
    /// (label, value) rows such as ("nodes", "3") or ("seed", "42").
    pub nodes_summary: Vec<(String, String)>,
}

/// Pixel size of both PNGs.
const PLOT_SIZE: (u32, u32) = (1200, 500);

/// Where the TTF for plot text is looked for (Debian's fonts-dejavu-core first).
const FONT_PATHS: &[&str] =
    &["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans.ttf"];
const FONT: &str = "sans-serif";

const OK_COLOUR: RGBColor = RGBColor(44, 160, 44);
const FAIL_COLOUR: RGBColor = RGBColor(214, 39, 40);
const INFO_COLOUR: RGBColor = RGBColor(255, 127, 14);
/// Fault shading, picked by the kind's rank among the kinds present; none of
/// these is green, red or orange, which the outcomes use.
const FAULT_COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
    RGBColor(127, 127, 127),
];

/// Details longer than this (in characters) are cut in the page: a checker may
/// attach thousands of example ops, and the full text is in results.json.
const DETAILS_LIMIT: usize = 20_000;

/// Writes latency.png, rate.png and index.html into `dir`. Returns the files written.
pub fn write(dir: &Path, input: &ReportInput) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let text = font_available();
    let periods = periods(input.ops);
    let end_s = secs(input.ops.iter().map(|op| op.time_ns).max().unwrap_or(0)).max(1.0);
    // A malformed history must not cost the rest of the report: plot no client
    // ops and say why on the page.
    let (points, pair_error) = match plotted(input.ops) {
        Ok(points) => (points, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };

    let latency = dir.join("latency.png");
    draw_latency(&latency, &points, &periods, end_s, text)
        .map_err(|e| anyhow!("drawing {}: {e}", latency.display()))?;
    let rate = dir.join("rate.png");
    draw_rate(&rate, &points, &periods, end_s, text)
        .map_err(|e| anyhow!("drawing {}: {e}", rate.display()))?;
    let index = dir.join("index.html");
    let html = html(input, &points, &periods, pair_error.as_deref());
    std::fs::write(&index, html).with_context(|| format!("writing {}", index.display()))?;
    Ok(vec![latency, rate, index])
}

/// Fault periods derived from nemesis ops: (fault kind, start_ns, end_ns).
pub fn fault_periods(ops: &[Op]) -> Vec<(String, u64, u64)> {
    periods(ops).into_iter().map(|p| (p.kind, p.start_ns, p.end_ns)).collect()
}

struct Period {
    kind: String,
    start_ns: u64,
    end_ns: u64,
    /// False when the history ended with the fault still active.
    stopped: bool,
    /// The nemesis's description of the start action.
    what: Value,
}

/// Periods ordered by start time; see the module doc for the convention.
fn periods(ops: &[Op]) -> Vec<Period> {
    let end_ns = ops.iter().map(|op| op.time_ns).max().unwrap_or(0);
    let mut invoked: HashMap<&str, &Value> = HashMap::new();
    let mut open: BTreeMap<String, (u64, Value)> = BTreeMap::new();
    let mut out = Vec::new();
    for op in ops.iter().filter(|op| op.process == Process::Nemesis) {
        match op.r#type {
            OpType::Invoke => {
                invoked.insert(&op.f, &op.value);
                continue;
            }
            // A failed action changed nothing.
            OpType::Fail => continue,
            OpType::Ok | OpType::Info => {}
        }
        if let Some(kind) = op.f.strip_prefix("start-") {
            // The completion may carry no value; the invocation's describes it too.
            let what = if op.value.is_null() { invoked.get(op.f.as_str()).copied() } else { Some(&op.value) };
            // A second start of an active fault does not restart its period.
            open.entry(kind.to_string()).or_insert((op.time_ns, what.cloned().unwrap_or(Value::Null)));
        } else if let Some(kind) = op.f.strip_prefix("stop-") {
            if let Some((start_ns, what)) = open.remove(kind) {
                out.push(Period {
                    kind: kind.to_string(),
                    start_ns,
                    end_ns: op.time_ns,
                    stopped: true,
                    what,
                });
            }
        }
    }
    out.extend(open.into_iter().map(|(kind, (start_ns, what))| Period {
        kind,
        start_ns,
        end_ns,
        stopped: false,
        what,
    }));
    out.sort_by(|a, b| (a.start_ns, &a.kind).cmp(&(b.start_ns, &b.kind)));
    out
}

/// A client op as drawn and counted.
struct Point {
    f: String,
    invoke_s: f64,
    /// When its completion record was written; None if the history ended first.
    complete_s: Option<f64>,
    outcome: Outcome,
}

fn plotted(ops: &[Op]) -> Result<Vec<Point>, crate::history::HistoryError> {
    // `pair` leaves complete_ns empty for info ops (their effect time is unknown),
    // but the record's own time is still the op's latency as the client saw it.
    let time_of = |index: u64| ops.binary_search_by_key(&index, |op| op.index).ok().map(|i| ops[i].time_ns);
    Ok(pair(ops)?
        .into_iter()
        .map(|c| Point {
            invoke_s: secs(c.invoke_ns),
            complete_s: c.complete_index.and_then(time_of).map(secs),
            outcome: c.outcome,
            f: c.f,
        })
        .collect())
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Registers a TTF with plotters once per process. Its ab_glyph backend has no
/// built-in font and wants `'static` bytes, so the file is leaked, once. Without
/// a font the plots are drawn with no text at all: any text would be an error.
fn font_available() -> bool {
    static LOADED: OnceLock<bool> = OnceLock::new();
    *LOADED.get_or_init(|| {
        FONT_PATHS.iter().any(|path| match std::fs::read(path) {
            Ok(bytes) => {
                plotters::style::register_font(FONT, FontStyle::Normal, Box::leak(bytes.into_boxed_slice()))
                    .is_ok()
            }
            Err(_) => false,
        })
    })
}

const OUTCOMES: [(Outcome, &str, RGBColor); 3] = [
    (Outcome::Ok, "ok", OK_COLOUR),
    (Outcome::Fail, "fail", FAIL_COLOUR),
    (Outcome::Info, "info", INFO_COLOUR),
];

/// Latency (log scale) against invocation time. Ops the history never completed
/// have no latency: they are drawn as triangles on the top edge.
fn draw_latency(
    path: &Path,
    points: &[Point],
    periods: &[Period],
    end_s: f64,
    text: bool,
) -> Result<(), Box<dyn Error>> {
    let latency_ms = |p: &Point| p.complete_s.map(|c| ((c - p.invoke_s) * 1e3).max(MIN_LATENCY_MS));
    let (lo, hi) = decades(points.iter().filter_map(latency_ms));
    let root = BitMapBackend::new(path, PLOT_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut builder = ChartBuilder::on(&root);
    layout(&mut builder, "client op latency", text);
    let mut chart = builder.build_cartesian_2d(0.0..end_s, (lo..hi).log_scale())?;
    chart.configure_mesh().x_desc("time since start (s)").y_desc("latency (ms)").draw()?;
    shade(&mut chart, periods, (lo, hi), text)?;
    for (outcome, name, colour) in OUTCOMES {
        let dots = points
            .iter()
            .filter(|p| p.outcome == outcome)
            .filter_map(|p| Some(Circle::new((p.invoke_s, latency_ms(p)?), 2, colour.mix(0.7).filled())));
        let series = chart.draw_series(dots)?;
        if text {
            series.label(name).legend(move |(x, y)| Circle::new((x + 6, y), 3, colour.filled()));
        }
    }
    let unfinished = points
        .iter()
        .filter(|p| p.complete_s.is_none())
        .map(|p| TriangleMarker::new((p.invoke_s, hi), 4, INFO_COLOUR.filled()));
    let series = chart.draw_series(unfinished)?;
    if text {
        series
            .label("never completed")
            .legend(|(x, y)| TriangleMarker::new((x + 6, y), 4, INFO_COLOUR.filled()));
    }
    legend(&mut chart, text)?;
    root.present()?;
    Ok(())
}

/// Floor for the log axis: a zero latency has no logarithm.
const MIN_LATENCY_MS: f64 = 1e-3;

/// Whole powers of ten around the values, so the log axis gets round ticks.
fn decades(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (min, max) = values.fold((f64::INFINITY, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !min.is_finite() {
        return (1.0, 1000.0);
    }
    let lo = 10f64.powi(min.log10().floor() as i32);
    let hi = 10f64.powi(max.log10().ceil() as i32);
    (lo, if hi > lo { hi } else { lo * 10.0 })
}

/// Completions per 1 s bucket, one line per outcome; never-completed ops have
/// no completion and so are not counted here.
fn draw_rate(
    path: &Path,
    points: &[Point],
    periods: &[Period],
    end_s: f64,
    text: bool,
) -> Result<(), Box<dyn Error>> {
    let buckets = end_s.ceil() as usize;
    let mut counts = [vec![0u64; buckets], vec![0u64; buckets], vec![0u64; buckets]];
    for p in points {
        let Some(c) = p.complete_s else { continue };
        let i = OUTCOMES.iter().position(|(o, _, _)| *o == p.outcome).expect("every outcome is listed");
        counts[i][(c as usize).min(buckets - 1)] += 1;
    }
    let max = counts.iter().flatten().copied().max().unwrap_or(0).max(1) as f64 * 1.1;
    let root = BitMapBackend::new(path, PLOT_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut builder = ChartBuilder::on(&root);
    layout(&mut builder, "completions per second", text);
    let mut chart = builder.build_cartesian_2d(0.0..end_s, 0.0..max)?;
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .y_desc("ops/s")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    shade(&mut chart, periods, (0.0, max), text)?;
    for ((_, name, colour), counts) in OUTCOMES.iter().zip(&counts) {
        // Each bucket's count is drawn at the bucket's middle.
        let line = counts.iter().enumerate().map(|(i, n)| (i as f64 + 0.5, *n as f64));
        let colour = *colour;
        let series = chart.draw_series(LineSeries::new(line, colour.stroke_width(2)))?;
        if text {
            series
                .label(*name)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 12, y)], colour.stroke_width(2)));
        }
    }
    legend(&mut chart, text)?;
    root.present()?;
    Ok(())
}

/// Caption and label areas only with a font: with no label area plotters
/// draws no tick labels, which is what keeps the fontless case from failing.
fn layout<DB: DrawingBackend>(builder: &mut ChartBuilder<DB>, caption: &str, text: bool) {
    builder.margin(15);
    if text {
        builder.caption(caption, (FONT, 20)).x_label_area_size(45).y_label_area_size(70);
    }
}

/// Translucent rectangles over each fault period, one legend entry per kind.
fn shade<'a, DB, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, Y>>,
    periods: &[Period],
    (y0, y1): (f64, f64),
    text: bool,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    DB: DrawingBackend + 'a,
    Y: Ranged<ValueType = f64>,
{
    let kinds: BTreeSet<&str> = periods.iter().map(|p| p.kind.as_str()).collect();
    for (i, kind) in kinds.into_iter().enumerate() {
        let colour = FAULT_COLOURS[i % FAULT_COLOURS.len()];
        let rects = periods.iter().filter(|p| p.kind == kind).map(|p| {
            Rectangle::new([(secs(p.start_ns), y0), (secs(p.end_ns), y1)], colour.mix(0.15).filled())
        });
        let series = chart.draw_series(rects)?;
        if text {
            series.label(kind).legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.mix(0.4).filled())
            });
        }
    }
    Ok(())
}

fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    text: bool,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 13))
            .draw()?;
    }
    Ok(())
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn validity_word(v: Validity) -> &'static str {
    match v {
        Validity::Valid => "valid",
        Validity::Invalid => "invalid",
        Validity::Unknown => "unknown",
    }
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:1250px}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;\
vertical-align:top}th{background:#f3f3f3}.num{text-align:right}code,pre{background:#f6f6f6}\
pre{max-height:30em;overflow:auto;padding:.5em;margin:.3em 0}\
.verdict{font-size:2.5em;font-weight:bold;padding:.2em .5em;display:inline-block;border-radius:.2em;color:#fff}\
.valid{background:#2ca02c}.invalid{background:#d62728}.unknown{background:#ff7f0e}\
td.valid,td.invalid,td.unknown{color:#fff;font-weight:bold}.warn{color:#d62728;font-weight:bold}\
img{max-width:100%;border:1px solid #ddd}";

/// The summary page. Every string that comes from the run is escaped: titles,
/// checker names and details may hold anything a client or server wrote.
fn html(input: &ReportInput, points: &[Point], periods: &[Period], pair_error: Option<&str>) -> String {
    let mut h = String::new();
    let title = esc(input.title);
    let verdict = validity_word(input.results.valid());
    // Writing to a String cannot fail, hence the ignored results below.
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>{STYLE}</style></head><body>\n<h1>{title}</h1>\n<p><code>{}</code></p>\n\
         <div class=\"verdict {verdict}\">{}</div>\n",
        esc(input.command),
        verdict.to_uppercase()
    );
    if let Some(e) = pair_error {
        let _ = writeln!(
            h,
            "<p class=\"warn\">History could not be paired, no client ops plotted: {}</p>",
            esc(e)
        );
    }

    h.push_str("<h2>Run</h2>\n<table>\n");
    for (label, value) in &input.nodes_summary {
        let _ = writeln!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(label), esc(value));
    }
    h.push_str(
        "</table>\n<h2>Checkers</h2>\n<table>\n<tr><th>checker</th><th>valid</th><th>counts</th>\
                <th>details</th></tr>\n",
    );
    for (name, r) in input.results.checkers() {
        let word = validity_word(r.valid);
        let counts: Vec<String> = r.counts.iter().map(|(k, n)| format!("{}: {n}", esc(k))).collect();
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"{word}\">{word}</td><td>{}</td><td>",
            esc(name),
            counts.join("<br>")
        );
        if !r.details.is_empty() {
            let mut details = serde_json::to_string_pretty(&r.details).unwrap_or_default();
            if let Some((cut, _)) = details.char_indices().nth(DETAILS_LIMIT) {
                details.truncate(cut);
                details.push_str("\n… (cut; see results.json)");
            }
            let keys: Vec<&str> = r.details.keys().map(String::as_str).collect();
            let _ = write!(
                h,
                "<details><summary>{}</summary><pre>{}</pre></details>",
                esc(&keys.join(", ")),
                esc(&details)
            );
        }
        h.push_str("</td></tr>\n");
    }
    h.push_str("</table>\n");

    h.push_str(
        "<h2>Latency</h2>\n<img src=\"latency.png\" alt=\"client op latency over time\">\n\
         <h2>Throughput</h2>\n<img src=\"rate.png\" alt=\"completions per second over time\">\n\
         <h2>Nemesis</h2>\n",
    );
    if periods.is_empty() {
        h.push_str("<p>No faults injected.</p>\n");
    } else {
        h.push_str(
            "<table>\n<tr><th>fault</th><th>start (s)</th><th>end (s)</th><th>duration (s)</th>\
                    <th>what</th></tr>\n",
        );
        for p in periods {
            let end = if p.stopped { format!("{:.3}", secs(p.end_ns)) } else { "never stopped".to_string() };
            let what = if p.what.is_null() { String::new() } else { p.what.to_string() };
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td class=\"num\">{:.3}</td><td class=\"num\">{end}</td>\
                 <td class=\"num\">{:.3}</td><td><code>{}</code></td></tr>",
                esc(&p.kind),
                secs(p.start_ns),
                secs(p.end_ns - p.start_ns),
                esc(&what)
            );
        }
        h.push_str("</table>\n");
    }

    // [ok, fail, info] per f.
    let mut by_f: BTreeMap<&str, [u64; 3]> = BTreeMap::new();
    for p in points {
        let i = OUTCOMES.iter().position(|(o, _, _)| *o == p.outcome).expect("every outcome is listed");
        by_f.entry(&p.f).or_default()[i] += 1;
    }
    h.push_str(
        "<h2>Operations</h2>\n<table>\n<tr><th>f</th><th>ok</th><th>fail</th><th>info</th>\
                <th>total</th></tr>\n",
    );
    for (f, [ok, fail, info]) in &by_f {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"num\">{ok}</td><td class=\"num\">{fail}</td>\
             <td class=\"num\">{info}</td><td class=\"num\">{}</td></tr>",
            esc(f),
            ok + fail + info
        );
    }
    let unfinished = points.iter().filter(|p| p.complete_s.is_none()).count();
    let _ = writeln!(h, "</table>\n<p>{unfinished} ops never completed (counted as info).</p>");

    h.push_str(
        "<h2>Files</h2>\n<ul><li><a href=\"history.jsonl\">history.jsonl</a></li>\
         <li><a href=\"results.json\">results.json</a></li></ul>\n</body></html>\n",
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fontless path cannot be reached through `write` on a machine that has
    /// the font, so it is driven directly. Nothing in this test binary registers
    /// a font, so any text drawn here would make plotters fail.
    #[test]
    fn plots_without_text_still_draw() {
        let dir = tempfile::tempdir().unwrap();
        let points = vec![
            Point { f: "read".into(), invoke_s: 0.5, complete_s: Some(0.6), outcome: Outcome::Ok },
            Point { f: "read".into(), invoke_s: 1.5, complete_s: Some(1.51), outcome: Outcome::Fail },
            Point { f: "write".into(), invoke_s: 2.5, complete_s: None, outcome: Outcome::Info },
        ];
        let periods = vec![Period {
            kind: "kill".into(),
            start_ns: 1_000_000_000,
            end_ns: 2_000_000_000,
            stopped: true,
            what: Value::Null,
        }];
        let (latency, rate) = (dir.path().join("l.png"), dir.path().join("r.png"));
        draw_latency(&latency, &points, &periods, 3.0, false).unwrap();
        draw_rate(&rate, &points, &periods, 3.0, false).unwrap();
        for path in [latency, rate] {
            assert_eq!(&std::fs::read(&path).unwrap()[..8], b"\x89PNG\r\n\x1a\n");
        }
    }

    #[test]
    fn decades_round_out_to_powers_of_ten() {
        assert_eq!(decades([0.3, 42.0].into_iter()), (0.1, 100.0));
        assert_eq!(decades([10.0].into_iter()), (10.0, 100.0));
        assert_eq!(decades(std::iter::empty()), (1.0, 1000.0));
    }
}
