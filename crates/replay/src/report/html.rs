//! The page: XHTML-compatible HTML (every element closed, attributes quoted, only the five XML
//! entities), inline CSS and SVG, no script. Every string from the data goes through [`esc`].

use super::data::{DirectiveView, Month, Named, ReportData, Rows};
use super::svg::{axis_count, axis_percent, colour, Chart, Dash, Series};
use super::ReportOptions;
use crate::text::thousands;
use chrono::{DateTime, SecondsFormat, Utc};
use log::StopReason;
use projections::{Counts, Rule};
use std::fmt::Write;

/// Escapes text for HTML and XML: the five special characters, and characters XML does not allow
/// (control characters other than tab and newlines, U+FFFE, U+FFFF) replaced by U+FFFD.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c < ' ' || c == '\u{7f}' || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn yuan(fen: u64) -> String {
    format!("{}.{:02}", thousands(fen / 100), fen % 100)
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

const STYLE: &str = r#"
body { font-family: "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "PingFang SC", "Microsoft YaHei", "Hiragino Sans GB", "WenQuanYi Micro Hei", system-ui, sans-serif; color: #1a1a1a; margin: 24px auto; max-width: 1080px; padding: 0 16px; line-height: 1.4; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; border-bottom: 2px solid #0072B2; padding-bottom: 4px; margin-top: 36px; }
h3 { font-size: 16px; margin: 20px 0 6px; }
p.note { color: #444; font-size: 14px; margin: 4px 0 10px; }
dl.header { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; font-size: 14px; }
dl.header dt { font-weight: bold; }
dl.header dd { margin: 0; font-family: ui-monospace, "DejaVu Sans Mono", monospace; overflow-wrap: anywhere; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0 12px; }
th, td { border: 1px solid #c8c8c8; padding: 2px 8px; text-align: right; }
th { background: #eef3f8; }
td.name, th.name { text-align: left; }
td.mono, code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; text-align: left; }
svg.chart { display: block; max-width: 100%; height: auto; margin: 6px 0; }
svg.chart text { font-family: inherit; fill: #1a1a1a; }
svg.chart .tick { font-size: 12px; }
svg.chart .axis { font-size: 13px; font-weight: bold; }
svg.chart .legend { font-size: 13px; }
svg.chart .marker { font-size: 12px; font-weight: bold; }
details { margin: 4px 0 12px; font-size: 13px; }
summary { cursor: pointer; color: #0072B2; }
footer { margin-top: 40px; font-size: 12px; color: #555; }
"#;

/// Heat-map backgrounds, light to dark (Okabe–Ito blue), and the text colour on each.
const HEAT: [(&str, &str); 6] = [
    ("#ffffff", "#1a1a1a"),
    ("#e3eef7", "#1a1a1a"),
    ("#bcd7ec", "#1a1a1a"),
    ("#7fb3da", "#1a1a1a"),
    ("#3d8cc4", "#ffffff"),
    ("#0072B2", "#ffffff"),
];

fn heat(count: u64, max: u64) -> (&'static str, &'static str) {
    if count == 0 || max == 0 {
        return HEAT[0];
    }
    // Levels 1..=5 by the fifth root-like share: quarter, half, ... of the largest cell.
    let level = match count.saturating_mul(100) / max {
        0..=4 => 1,
        5..=19 => 2,
        20..=49 => 3,
        50..=89 => 4,
        _ => 5,
    };
    HEAT.get(level).copied().unwrap_or(HEAT[0])
}

struct Page {
    s: String,
}

impl Page {
    fn push(&mut self, text: &str) {
        self.s.push_str(text);
    }

    fn section(&mut self, id: &str, title: &str, note: &str) {
        let _ = write!(self.s, r#"<section id="{}"><h2>{}</h2><p class="note">{}</p>"#, esc(id), esc(title), esc(note));
    }

    fn table_head(&mut self, id: &str, columns: &[&str]) {
        let _ = write!(self.s, r#"<table id="{}"><thead><tr>"#, esc(id));
        for (i, c) in columns.iter().enumerate() {
            let class = if i == 0 { r#" class="name""# } else { "" };
            let _ = write!(self.s, "<th{class}>{}</th>", esc(c));
        }
        self.s.push_str("</tr></thead><tbody>");
    }

    fn cells(&mut self, name: &str, values: &[String]) {
        let _ = write!(self.s, r#"<td class="name">{}</td>"#, esc(name));
        for v in values {
            let _ = write!(self.s, "<td>{}</td>", esc(v));
        }
    }
}

fn header(page: &mut Page, d: &ReportData) {
    let _ = write!(page.s, r#"<header id="header"><h1>Audit report of ledger {}</h1>"#, esc(&d.ledger_id));
    page.push(r#"<p class="note">Rebuilt from the log by the replay tool; every number below is one that <code>replay fleet --as-of</code> or <code>replay audit --as-of</code> gives for the same cut.</p><dl class="header">"#);
    let mut row = |k: &str, v: &str| {
        let _ = write!(page.s, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(v));
    };
    row("source", &format!("{} ({})", d.source, d.kind));
    row("ledger id", &d.ledger_id);
    row("log size", &format!("{} records", thousands(d.size)));
    row("Merkle root", &d.root);
    if d.checkpoints.is_empty() {
        row("signed checkpoint", "none given (verify with --checkpoint FILE --key VKEY)");
    }
    for c in &d.checkpoints {
        row("signed checkpoint", c);
    }
    let as_of = match &d.as_of {
        Some(t) => format!("{} ({} of {} records folded)", rfc3339(t), thousands(d.position), thousands(d.size)),
        None => format!("the whole log ({} records)", thousands(d.position)),
    };
    row("as of", &as_of);
    row("records from", &format!("{} to {} (recorded_at)", rfc3339(&d.first_recorded), rfc3339(&d.last_recorded)));
    row("fleet digest", &d.digest);
    row("terminals", &thousands(d.total.total));
    row("events rejected by the rules", &thousands(d.illegal));
    let made = if d.generated_given {
        "(--generated-at)"
    } else {
        "(the last record folded: the report is a function of the log)"
    };
    row("made", &format!("{} {made}", rfc3339(&d.generated_at)));
    page.push("</dl></header>");
}

fn labels(months: &[Month]) -> Vec<String> {
    months.iter().map(|m| m.label.clone()).collect()
}

fn fleet_section(page: &mut Page, d: &ReportData) {
    let ms = &d.months;
    let x = labels(ms);
    page.section(
        "fleet",
        "Fleet over time",
        "Terminals by lifecycle status at the end of each month (the last point is the cut, in its month), with those whose contract is expired and those with an open flag, whatever their status. Each point is replay fleet --as-of the time in the table.",
    );
    let chart = Chart {
        id: "chart-fleet",
        title: "Terminals by status at each month's end",
        y_label: "terminals",
        x_label: "month (recorded_at)",
        x_labels: &x,
        bars: vec![
            Series::counts("issued", colour::SKY, ms.iter().map(|m| m.counts.issued)),
            Series::counts("active", colour::GREEN, ms.iter().map(|m| m.counts.active)),
            Series::counts("stopped", colour::VERMILLION, ms.iter().map(|m| m.counts.stopped)),
            Series::counts("replaced", colour::PURPLE, ms.iter().map(|m| m.counts.replaced)),
        ],
        lines: vec![
            Series::counts("contract expired", colour::BLACK, ms.iter().map(|m| m.counts.contract_expired))
                .dashed(Dash::Dashed),
            Series::counts("flagged", colour::ORANGE, ms.iter().map(|m| m.counts.flagged)).dashed(Dash::Dotted),
        ],
        marker: None,
        y_format: axis_count,
    };
    page.push(&chart.render());
    page.push("<details><summary>The numbers, per month</summary>");
    page.table_head(
        "data-months",
        &[
            "month",
            "as of (replay fleet --as-of)",
            "records",
            "terminals",
            "issued",
            "active",
            "stopped",
            "replaced",
            "contract expired",
            "flagged",
            "dormant",
            "newly issued",
            "activations",
            "flow (yuan)",
            "stops",
        ],
    );
    for m in ms {
        let c = &m.counts;
        let _ = write!(
            page.s,
            r#"<tr data-as-of="{}" data-position="{}" data-devices="{}" data-issued="{}" data-active="{}" data-stopped="{}" data-replaced="{}" data-contract-expired="{}" data-flagged="{}" data-dormant="{}" data-new="{}" data-activations="{}" data-flow-fen="{}"{}>"#,
            esc(&rfc3339(&m.cut)),
            m.position,
            c.total,
            c.issued,
            c.active,
            c.stopped,
            c.replaced,
            c.contract_expired,
            c.flagged,
            m.dormant,
            m.issued,
            m.activations,
            m.flow_fen,
            StopReason::ALL
                .iter()
                .zip(&m.stops)
                .map(|(r, n)| format!(r#" data-stops-{}="{n}""#, r.as_str().replace('_', "-")))
                .collect::<String>()
        );
        let mut values = vec![rfc3339(&m.cut)];
        values.extend(
            [
                m.position,
                c.total,
                c.issued,
                c.active,
                c.stopped,
                c.replaced,
                c.contract_expired,
                c.flagged,
                m.dormant,
                m.issued,
                m.activations,
            ]
            .map(thousands),
        );
        values.push(yuan(m.flow_fen));
        values.push(thousands(m.stops.iter().sum()));
        page.cells(&m.label, &values);
        page.push("</tr>");
    }
    page.push("</tbody></table></details></section>");
}

fn flow_section(page: &mut Page, d: &ReportData) {
    let ms = &d.months;
    let x = labels(ms);
    page.section(
        "activity",
        "Activations and flow per month",
        "Terminals issued and activated in each month, and the flow recorded in it: the issued, activated and flow events the lifecycle rules accepted between two month ends (by recorded_at).",
    );
    let chart = Chart {
        id: "chart-activations",
        title: "Terminals issued and activated per month",
        y_label: "terminals",
        x_label: "month (recorded_at)",
        x_labels: &x,
        bars: vec![Series::counts("activated", colour::GREEN, ms.iter().map(|m| m.activations))],
        lines: vec![Series::counts("issued", colour::BLUE, ms.iter().map(|m| m.issued)).dashed(Dash::Dashed)],
        marker: None,
        y_format: axis_count,
    };
    page.push(&chart.render());
    let chart = Chart {
        id: "chart-flow",
        title: "Flow recorded per month, in yuan",
        y_label: "flow (yuan)",
        x_label: "month (recorded_at)",
        x_labels: &x,
        bars: vec![Series {
            name: "flow (yuan)".into(),
            colour: colour::ORANGE,
            values: ms.iter().map(|m| (m.flow_fen / 100) as f64).collect(),
            dash: Dash::Solid,
        }],
        lines: Vec::new(),
        marker: None,
        y_format: axis_count,
    };
    page.push(&chart.render());
    page.push("</section>");
    page.section(
        "dormant",
        "Dormant terminals",
        "The share of the fleet that never reached 100 yuan of flow: terminals the audit's dormant rule names at each month's end (issued more than the dormant limit before it and never activated), out of all terminals then.",
    );
    let last = ms.last().map(|m| (m.dormant, m.counts.total)).unwrap_or_default();
    let _ = write!(
        page.s,
        r#"<p id="dormant-share" data-dormant="{}" data-devices="{}">At the cut: <strong>{} of {} terminals ({:.1}%)</strong> are dormant.</p>"#,
        last.0,
        last.1,
        thousands(last.0),
        thousands(last.1),
        percent(last.0, last.1)
    );
    let chart = Chart {
        id: "chart-dormant",
        title: "Dormant share of the fleet at each month's end",
        y_label: "share of terminals",
        x_label: "month (recorded_at)",
        x_labels: &x,
        bars: Vec::new(),
        lines: vec![Series {
            name: "dormant (never reached 100 yuan)".into(),
            colour: colour::VERMILLION,
            values: ms.iter().map(|m| percent(m.dormant, m.counts.total)).collect(),
            dash: Dash::Solid,
        }],
        marker: None,
        y_format: axis_percent,
    };
    page.push(&chart.render());
    page.push("</section>");
    page.section(
        "stops",
        "Stops per month, by reason",
        "Stopped events the lifecycle rules accepted in each month, by their reason.",
    );
    let colours = [colour::VERMILLION, colour::YELLOW, colour::PURPLE, colour::SKY, colour::GREEN];
    let chart = Chart {
        id: "chart-stops",
        title: "Stops per month by reason",
        y_label: "terminals stopped",
        x_label: "month (recorded_at)",
        x_labels: &x,
        bars: StopReason::ALL
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Series::counts(
                    &r.as_str().replace('_', " "),
                    colours.get(i).copied().unwrap_or(colour::BLACK),
                    ms.iter().map(|m| m.stops.get(i).copied().unwrap_or(0)),
                )
            })
            .collect(),
        lines: Vec::new(),
        marker: None,
        y_format: axis_count,
    };
    page.push(&chart.render());
    page.push("</section>");
}

fn device_command(options: &ReportOptions, sn: &str) -> String {
    format!("replay device {} {sn}", options.source_arg)
}

fn named_table(page: &mut Page, id: &str, options: &ReportOptions, names: &[Named]) {
    page.table_head(id, &["terminal", "provider", "position", "what", "see it with"]);
    for n in names {
        let _ = write!(
            page.s,
            r#"<tr data-sn="{}"><td class="mono">{}</td><td class="name">{}</td><td>{}</td><td class="name">{}</td><td class="mono">{}</td></tr>"#,
            esc(&n.sn),
            esc(&n.sn),
            esc(&n.provider),
            n.position,
            esc(&n.detail),
            esc(&device_command(options, &n.sn))
        );
    }
    page.push("</tbody></table>");
}

fn directive_section(page: &mut Page, d: &ReportData, options: &ReportOptions) {
    page.section(
        "directives",
        "Emergency-stop directives",
        "For each directive: the terminals of the models it lists still running (issued, not stopped) at the end of each day after it, against its deadline; who stopped late and who not at all. At the deadline the running terminals, with those issued after it and still running, are the audit's directive_not_enforced findings.",
    );
    if d.directives.is_empty() {
        page.push(r#"<p id="no-directives">No directive was recorded.</p>"#);
    }
    for (i, v) in d.directives.iter().enumerate() {
        directive_one(page, i, v, options);
    }
    page.push("</section>");
}

fn directive_one(page: &mut Page, i: usize, v: &DirectiveView, options: &ReportOptions) {
    let deadline = v.deadline.as_ref().map_or_else(|| "none".to_owned(), rfc3339);
    let _ = write!(
        page.s,
        r#"<h3 id="directive-{i}" data-id="{}" data-running-at-deadline="{}" data-issued-after="{}" data-not-enforced="{}">Directive {}: {} models, {} terminals of them</h3><p class="note">In effect {}; deadline {}. Running at the deadline: <strong>{}</strong>; issued after it and still running: <strong>{}</strong>; the audit's directive_not_enforced findings: <strong>{}</strong>.</p>"#,
        esc(&v.id),
        v.running_at_deadline,
        v.issued_after,
        v.not_enforced_findings,
        esc(&v.id),
        v.models,
        thousands(v.terminals),
        esc(&rfc3339(&v.at)),
        esc(&deadline),
        thousands(v.running_at_deadline),
        thousands(v.issued_after),
        thousands(v.not_enforced_findings)
    );
    if i < super::data::MAX_DIRECTIVE_CHARTS {
        let x: Vec<String> = v.days.iter().map(|(day, _)| day.format("%m-%d").to_string()).collect();
        let marker = v.deadline.and_then(|dl| {
            let day = dl.date_naive();
            v.days.iter().position(|(d, _)| *d == day).map(|p| (p, format!("deadline {}", day.format("%Y-%m-%d"))))
        });
        let id = format!("chart-directive-{i}");
        let title = format!("Terminals of the models of {} still running, per day", v.id);
        let chart = Chart {
            id: &id,
            title: &title,
            y_label: "terminals running",
            x_label: "day (event time, UTC)",
            x_labels: &x,
            bars: vec![Series::counts("running at the end of the day", colour::BLUE, v.days.iter().map(|(_, n)| *n))],
            lines: Vec::new(),
            marker,
            y_format: axis_count,
        };
        page.push(&chart.render());
        let _ = write!(page.s, "<details><summary>The numbers, per day</summary>");
        page.table_head(&format!("data-directive-{i}"), &["day", "running"]);
        for (day, n) in &v.days {
            let _ = write!(page.s, r#"<tr data-day="{day}" data-running="{n}">"#);
            page.cells(&day.to_string(), &[thousands(*n)]);
            page.push("</tr>");
        }
        page.push("</tbody></table></details>");
    }
    page.table_head(&format!("late-directive-{i}"), &["provider", "stopped after the deadline", "never stopped"]);
    for (provider, [late, missed]) in &v.late_by_provider {
        let _ = write!(page.s, r#"<tr data-provider="{}" data-late="{late}" data-missed="{missed}">"#, esc(provider));
        page.cells(provider, &[thousands(*late), thousands(*missed)]);
        page.push("</tr>");
    }
    page.push("</tbody></table>");
    if !v.late.is_empty() {
        page.push(r#"<p class="note">The first of them, by SN:</p>"#);
        named_table(page, &format!("late-terminals-{i}"), options, &v.late);
    }
}

fn findings_section(page: &mut Page, d: &ReportData, options: &ReportOptions) {
    page.section(
        "findings",
        "Audit findings by rule and provider",
        "The findings of replay audit --as-of the cut, counted by rule and by the provider of the terminal they name (\"-\": a finding about the directives stream). Darker cells hold more findings.",
    );
    let providers: std::collections::BTreeSet<&str> = d
        .findings
        .values()
        .flat_map(|m| m.keys().map(String::as_str))
        .chain(d.by_provider.iter().map(|(p, _)| p.as_str()))
        .collect();
    let max = d.findings.values().flat_map(|m| m.values().copied()).max().unwrap_or(0);
    let _ = write!(page.s, r#"<table id="findings-heatmap"><thead><tr><th class="name">rule</th>"#);
    for p in &providers {
        let _ = write!(page.s, "<th>{}</th>", esc(p));
    }
    page.push("<th>all</th></tr></thead><tbody>");
    for rule in Rule::ALL {
        let by = d.findings.get(&rule);
        let total: u64 = by.map(|m| m.values().sum()).unwrap_or(0);
        let _ = write!(
            page.s,
            r#"<tr data-rule="{}" data-count="{total}"><td class="name">{}</td>"#,
            rule.as_str(),
            rule.as_str()
        );
        for p in &providers {
            let n = by.and_then(|m| m.get(*p)).copied().unwrap_or(0);
            let (bg, fg) = heat(n, max);
            let _ = write!(
                page.s,
                r#"<td data-provider="{}" data-count="{n}" style="background:{bg};color:{fg}">{}</td>"#,
                esc(p),
                thousands(n)
            );
        }
        let _ = write!(page.s, "<td><strong>{}</strong></td></tr>", thousands(total));
    }
    page.push("</tbody></table>");
    for rule in Rule::ALL {
        let Some(examples) = d.examples.get(&rule).filter(|e| !e.is_empty()) else { continue };
        let _ = write!(page.s, r#"<h3 id="examples-{}">{}: the first findings</h3>"#, rule.as_str(), rule.as_str());
        named_table(page, &format!("examples-table-{}", rule.as_str()), options, examples);
    }
    page.push("</section>");
}

fn counts_table(page: &mut Page, id: &str, first: &str, rows: &Rows) {
    page.table_head(
        id,
        &[first, "terminals", "issued", "active", "stopped", "replaced", "flagged", "contract expired"],
    );
    let values =
        |c: &Counts| [c.total, c.issued, c.active, c.stopped, c.replaced, c.flagged, c.contract_expired].map(thousands);
    for (name, c) in rows {
        let _ = write!(page.s, r#"<tr data-name="{}" data-devices="{}">"#, esc(name), c.total);
        page.cells(name, &values(c));
        page.push("</tr>");
    }
    page.push("</tbody></table>");
}

fn tables_section(page: &mut Page, d: &ReportData, options: &ReportOptions) {
    page.section(
        "tables",
        "The fleet at the cut",
        "Terminals by provider, by model and by region at the cut (replay fleet --as-of the cut).",
    );
    page.push("<h3>By provider</h3>");
    counts_table(page, "table-providers", "provider", &d.by_provider);
    let _ = write!(
        page.s,
        "<h3>By model: the {} largest of {}</h3>",
        options.top_models.min(d.models),
        thousands(d.models as u64)
    );
    counts_table(page, "table-models", "model", &d.by_model);
    page.push("<h3>By region</h3>");
    counts_table(page, "table-regions", "region", &d.by_region);
    page.push("</section>");
}

/// The whole page.
pub fn render(d: &ReportData, options: &ReportOptions) -> String {
    let mut page = Page { s: String::with_capacity(1 << 18) };
    page.push(
        "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\"><head><meta charset=\"utf-8\"/>",
    );
    page.push(r#"<meta name="viewport" content="width=device-width, initial-scale=1"/>"#);
    let _ =
        write!(page.s, "<title>Audit report: ledger {}</title><style>{STYLE}</style></head><body>", esc(&d.ledger_id));
    header(&mut page, d);
    fleet_section(&mut page, d);
    flow_section(&mut page, d);
    directive_section(&mut page, d, options);
    findings_section(&mut page, d, options);
    tables_section(&mut page, d, options);
    let _ = writeln!(
        page.s,
        "<footer>Made by replay {} (posledger). Self-contained: no script, nothing fetched; the same log and options give the same bytes. docs/REPORT.md says what each chart shows.</footer></body></html>",
        env!("CARGO_PKG_VERSION")
    );
    page.s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_characters_xml_forbids() {
        assert_eq!(esc(r#"<a href="x">&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
        assert_eq!(esc("a\u{1}b\u{ffff}\t收银"), "a\u{fffd}b\u{fffd}\t收银");
    }

    #[test]
    fn heat_levels_grow_with_the_count() {
        assert_eq!(heat(0, 10), HEAT[0]);
        assert_eq!(heat(10, 10), HEAT[5]);
        assert!(heat(1, 1000) != heat(600, 1000));
    }
}
