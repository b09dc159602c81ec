//! The report: fault periods from nemesis ops, the two PNGs and index.html.

use std::path::Path;

use jepsen::history::{History, Op, OpType, Process};
use jepsen::report::{self, fault_periods, ReportInput};
use jepsen::results::{CheckerResult, Results, Validity};
use serde_json::{json, Value};

const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

/// Raw events before they get indices: (time, type, process, f, value).
type Event = (u64, OpType, Process, String, Value);

/// What the synthetic history holds, for checking the page's counts.
#[derive(Default)]
struct Tally {
    /// [ok, fail, info] per f, info including never-completed ops.
    read: [u64; 3],
    write: [u64; 3],
    unfinished: u64,
}

/// Four client processes doing reads and writes for ~10 s with a fixed
/// pseudo-random mix of outcomes and latencies; process 3's last op never
/// completes. Events are sorted by time and then given indices, as the runner's
/// shared history does.
fn client_events() -> (Vec<Event>, Tally) {
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut events = Vec::new();
    let mut tally = Tally::default();
    for p in 0..4u64 {
        let mut t = p * 7 * MS;
        while t < 9_800 * MS {
            let f = if next() % 3 == 0 { "write" } else { "read" };
            let latency = MS + next() % (80 * MS);
            let (r#type, slot) = match next() % 10 {
                0 => (OpType::Fail, 1),
                1 => (OpType::Info, 2),
                _ => (OpType::Ok, 0),
            };
            events.push((t, OpType::Invoke, Process::Client(p), f.to_string(), json!({ "key": "k" })));
            events.push((t + latency, r#type, Process::Client(p), f.to_string(), Value::Null));
            let counts = if f == "write" { &mut tally.write } else { &mut tally.read };
            counts[slot] += 1;
            t += latency + 10 * MS;
        }
        if p == 3 {
            events.push((t, OpType::Invoke, Process::Client(p), "write".to_string(), json!({ "key": "k" })));
            tally.write[2] += 1;
            tally.unfinished += 1;
        }
    }
    (events, tally)
}

/// Nemesis actions: invoke, then an info completion 5 ms later.
fn nemesis(events: &mut Vec<Event>, at: u64, f: &str, value: Value) {
    events.push((at, OpType::Invoke, Process::Nemesis, f.to_string(), value.clone()));
    events.push((at + 5 * MS, OpType::Info, Process::Nemesis, f.to_string(), value));
}

fn to_ops(mut events: Vec<Event>) -> Vec<Op> {
    // Stable: an op's completion stays before the same process's next invoke.
    events.sort_by_key(|e| e.0);
    let mut h = History::new();
    for (time, r#type, process, f, value) in events {
        h.push(time, r#type, process, &f, value);
    }
    h.into_ops()
}

/// Partition 2–5 s overlapping kill 4–7 s, a pause from 8.5 s never stopped,
/// and noise that must not make periods: a stop with no start and a failed start.
fn nemesis_events() -> Vec<Event> {
    let mut events = Vec::new();
    nemesis(&mut events, 2 * S, "start-partition", json!({ "partition": "isolate n2", "nodes": [2] }));
    nemesis(&mut events, 4 * S, "start-kill", json!({ "nodes": [1] }));
    nemesis(&mut events, 5 * S, "stop-partition", json!({}));
    nemesis(&mut events, 7 * S, "stop-kill", json!({ "nodes": [1] }));
    nemesis(&mut events, 7_500 * MS, "stop-membership", json!({}));
    events.push((7_600 * MS, OpType::Invoke, Process::Nemesis, "start-membership".into(), json!({})));
    events.push((7_605 * MS, OpType::Fail, Process::Nemesis, "start-membership".into(), json!({})));
    nemesis(&mut events, 8_500 * MS, "start-pause", json!({ "pause": "<b>n3</b>" }));
    events
}

fn full_history() -> (Vec<Op>, Tally) {
    let (mut events, tally) = client_events();
    events.extend(nemesis_events());
    (to_ops(events), tally)
}

fn results() -> Results {
    let mut r = Results::new();
    r.insert("linear", CheckerResult::new(Validity::Valid).with_count("ops", 400));
    r.insert(
        "set",
        CheckerResult::new(Validity::Invalid)
            .with_count("lost", 2)
            .with_detail("lost", json!(["<script>alert('lost')</script>"])),
    );
    r
}

fn input<'a>(title: &'a str, ops: &'a [Op], results: &'a Results) -> ReportInput<'a> {
    ReportInput {
        title,
        command: "jepsen test --workload register --nemesis partition,kill --time-limit 10",
        ops,
        results,
        nodes_summary: vec![("nodes".into(), "3".into()), ("seed".into(), "42".into())],
    }
}

#[test]
fn fault_periods_follow_the_nemesis_convention() {
    let (ops, _) = full_history();
    let end = ops.iter().map(|op| op.time_ns).max().unwrap();
    assert!(end > 9_800 * MS, "the history runs past the pause");
    assert_eq!(
        fault_periods(&ops),
        vec![
            ("partition".to_string(), 2 * S + 5 * MS, 5 * S + 5 * MS),
            ("kill".to_string(), 4 * S + 5 * MS, 7 * S + 5 * MS),
            ("pause".to_string(), 8_500 * MS + 5 * MS, end),
        ]
    );
    assert!(fault_periods(&to_ops(client_events().0)).is_empty());
}

#[test]
fn fault_periods_pair_repeated_faults_of_one_kind_in_order() {
    let mut events = Vec::new();
    nemesis(&mut events, S, "start-kill", json!({ "nodes": [1] }));
    // A second start while killed does not open a second period.
    nemesis(&mut events, 2 * S, "start-kill", json!({ "nodes": [2] }));
    nemesis(&mut events, 3 * S, "stop-kill", Value::Null);
    nemesis(&mut events, 4 * S, "start-kill", json!({ "nodes": [3] }));
    nemesis(&mut events, 6 * S, "stop-kill", Value::Null);
    let ops = to_ops(events);
    assert_eq!(
        fault_periods(&ops),
        vec![
            ("kill".to_string(), S + 5 * MS, 3 * S + 5 * MS),
            ("kill".to_string(), 4 * S + 5 * MS, 6 * S + 5 * MS),
        ]
    );
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap());
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

/// Counts of pixels that are clearly green, red, orange, and tinted blue the
/// way the first fault kind's translucent shading is.
fn colour_counts(path: &Path) -> [usize; 4] {
    let decoder = png::Decoder::new(std::io::Cursor::new(std::fs::read(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.line_size / info.width as usize;
    let mut counts = [0; 4];
    for px in buf[..info.buffer_size()].chunks(channels) {
        let (r, g, b) = (px[0] as i32, px[1] as i32, px[2] as i32);
        if g > r + 60 && g > b + 60 {
            counts[0] += 1;
        } else if r > g + 90 && (g - b).abs() < 30 {
            counts[1] += 1;
        } else if r > 200 && r > g + 50 && g > b + 50 {
            counts[2] += 1;
        } else if b > r + 12 && b > 200 && (r - g).abs() > 5 {
            counts[3] += 1;
        }
    }
    counts
}

#[test]
fn write_produces_plots_and_an_escaped_summary_page() {
    let (ops, tally) = full_history();
    let results = results();
    let dir = tempfile::tempdir().unwrap();
    let title = "register <script>alert(1)</script> & more";
    let files = report::write(dir.path(), &input(title, &ops, &results)).unwrap();
    let names: Vec<_> = files.iter().map(|f| f.file_name().unwrap().to_str().unwrap().to_string()).collect();
    assert_eq!(names, ["latency.png", "rate.png", "index.html"]);
    for f in &files {
        assert!(f.is_file(), "{} written", f.display());
        assert_eq!(f.parent().unwrap(), dir.path());
    }

    for png in &files[..2] {
        assert_eq!(png_size(&std::fs::read(png).unwrap()), (1200, 500), "{}", png.display());
        let [green, red, orange, shaded] = colour_counts(png);
        assert!(
            green > 50 && red > 20 && orange > 20,
            "{}: outcome colours {green} {red} {orange}",
            png.display()
        );
        assert!(shaded > 5_000, "{}: fault shading {shaded}", png.display());
    }

    // The same run without faults has no shading: the count above is the shading.
    let quiet_ops: Vec<Op> = ops.iter().filter(|op| op.process != Process::Nemesis).cloned().collect();
    let quiet = tempfile::tempdir().unwrap();
    report::write(quiet.path(), &input("quiet", &quiet_ops, &results)).unwrap();
    for png in ["latency.png", "rate.png"] {
        assert_eq!(colour_counts(&quiet.path().join(png))[3], 0, "{png} without faults");
    }

    let html = std::fs::read_to_string(&files[2]).unwrap();
    assert!(!html.contains("<script"), "data is escaped:\n{html}");
    assert!(html.contains("register &lt;script&gt;alert(1)&lt;/script&gt; &amp; more"));
    assert!(html.contains("&lt;script&gt;alert(&#39;lost&#39;)&lt;/script&gt;"), "checker details shown");
    assert!(html.contains("&lt;b&gt;n3&lt;/b&gt;"), "nemesis descriptions shown, escaped");
    assert!(html.contains(r#"<div class="verdict invalid">INVALID</div>"#));
    assert!(html.contains(r#"<td>linear</td><td class="valid">valid</td><td>ops: 400</td>"#));
    assert!(html.contains(r#"<td>set</td><td class="invalid">invalid</td><td>lost: 2</td>"#));
    assert!(html.contains("<th>nodes</th><td>3</td>") && html.contains("<th>seed</th><td>42</td>"));
    assert!(html.contains("--nemesis partition,kill --time-limit 10"));
    for link in [
        r#"<img src="latency.png""#,
        r#"<img src="rate.png""#,
        r#"href="history.jsonl""#,
        r#"href="results.json""#,
    ] {
        assert!(html.contains(link), "{link}");
    }
    for (f, [ok, fail, info]) in [("read", tally.read), ("write", tally.write)] {
        let total = ok + fail + info;
        let row = format!(
            concat!(
                r#"<tr><td>{}</td><td class="num">{}</td><td class="num">{}</td>"#,
                r#"<td class="num">{}</td><td class="num">{}</td></tr>"#
            ),
            f, ok, fail, info, total
        );
        assert!(html.contains(&row), "missing {row}");
    }
    assert!(html.contains(&format!("{} ops never completed", tally.unfinished)));
    // One row per period; the pause ran to the end.
    assert_eq!(html.matches("<tr><td>partition</td>").count(), 1);
    assert_eq!(html.matches("<tr><td>kill</td>").count(), 1);
    assert_eq!(html.matches("<tr><td>pause</td>").count(), 1);
    assert!(html.contains("never stopped"));
    assert!(!html.contains("membership"), "a failed start and a lone stop make no period");
}

#[test]
fn verdict_reads_valid_or_unknown() {
    let (ops, _) = full_history();
    let dir = tempfile::tempdir().unwrap();
    let mut valid = Results::new();
    valid.insert("linear", CheckerResult::new(Validity::Valid));
    report::write(dir.path(), &input("ok run", &ops, &valid)).unwrap();
    let html = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    assert!(html.contains(r#"<div class="verdict valid">VALID</div>"#));

    let empty = Results::new();
    report::write(dir.path(), &input("no checkers", &ops, &empty)).unwrap();
    let html = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    assert!(html.contains(r#"<div class="verdict unknown">UNKNOWN</div>"#));
}

#[test]
fn a_malformed_history_still_gets_a_report() {
    let mut h = History::new();
    h.push(0, OpType::Ok, Process::Client(0), "read", Value::Null);
    let ops = h.into_ops();
    let results = results();
    let dir = tempfile::tempdir().unwrap();
    let files = report::write(&dir.path().join("nested"), &input("broken", &ops, &results)).unwrap();
    assert!(files.iter().all(|f| f.is_file()));
    let html = std::fs::read_to_string(&files[2]).unwrap();
    assert!(html.contains("completion without an invocation"), "the page says why nothing is plotted");
}
