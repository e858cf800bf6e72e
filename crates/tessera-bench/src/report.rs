//! The summary: medians over rounds per scenario and target, and Tessera's ratio to every
//! other target measured in the same run.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::scenario::{Measurement, Scenario};

/// Per (scenario, target label): one measurement per round.
#[derive(Default)]
pub struct Results {
    pub by: BTreeMap<(Scenario, String), Vec<Measurement>>,
    /// Target labels in the order given.
    pub targets: Vec<String>,
}

pub struct Row {
    pub per_second: f64,
    pub peak_rss_mib: Option<f64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    pub server_cpu_us_per_op: Option<f64>,
}

pub fn median(mut xs: Vec<f64>) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    Some(if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    })
}

/// What a reference target's figure for `s` is when it has no such scenario of its own:
/// the ceiling serves no JWKS, so a fixed GET body (its discovery) stands in; the peer's
/// ES256 JWT figure is the yardstick for EdDSA too.
fn stand_in(s: Scenario) -> Option<Scenario> {
    match s {
        Scenario::Jwks => Some(Scenario::Discovery),
        Scenario::CcJwtEddsa => Some(Scenario::CcJwtEs256),
        _ => None,
    }
}

impl Results {
    pub fn add(&mut self, scenario: Scenario, target: &str, m: Measurement) {
        if !self.targets.iter().any(|t| t == target) {
            self.targets.push(target.to_owned());
        }
        self.by
            .entry((scenario, target.to_owned()))
            .or_default()
            .push(m);
    }

    pub fn row(&self, scenario: Scenario, target: &str) -> Option<Row> {
        let ms = self.by.get(&(scenario, target.to_owned()))?;
        let per_second = median(ms.iter().map(Measurement::per_second).collect())?;
        Some(Row {
            per_second,
            p50_ms: median(ms.iter().map(|m| m.quantile_ms(0.5)).collect())?,
            p99_ms: median(ms.iter().map(|m| m.quantile_ms(0.99)).collect())?,
            errors: ms.iter().map(|m| m.errors).sum(),
            peak_rss_mib: ms.iter().filter_map(|m| m.peak_rss_mib).reduce(f64::max),
            server_cpu_us_per_op: median(
                ms.iter().filter_map(|m| m.server_cpu_us_per_op).collect(),
            ),
        })
    }

    /// The reference's figure for `scenario`, or for its stand-in.
    fn reference(&self, scenario: Scenario, target: &str) -> Option<(f64, bool)> {
        if let Some(r) = self.row(scenario, target) {
            return Some((r.per_second, false));
        }
        let s = stand_in(scenario)?;
        self.row(s, target).map(|r| (r.per_second, true))
    }

    /// `subject`'s median over `reference`'s for `scenario` (same run).
    pub fn ratio(&self, scenario: Scenario, subject: &str, reference: &str) -> Option<(f64, bool)> {
        let s = self.row(scenario, subject)?.per_second;
        let (r, stand_in) = self.reference(scenario, reference)?;
        (r > 0.0).then(|| (s / r, stand_in))
    }

    /// A markdown table: one row per scenario and target, then Tessera's ratios.
    pub fn table(&self, subject: Option<&str>) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| scenario | target | req/s (median) | p50 ms | p99 ms | errors | peak RSS MiB | server CPU µs/op |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|");
        let scenarios: Vec<Scenario> = {
            let mut v: Vec<Scenario> = self.by.keys().map(|(s, _)| *s).collect();
            v.dedup();
            v
        };
        for s in &scenarios {
            for t in &self.targets {
                if let Some(r) = self.row(*s, t) {
                    let _ = writeln!(
                        out,
                        "| {s} | {t} | {:.0} | {:.2} | {:.2} | {} | {} | {} |",
                        r.per_second,
                        r.p50_ms,
                        r.p99_ms,
                        r.errors,
                        r.peak_rss_mib.map_or("–".to_owned(), |m| format!("{m:.1}")),
                        r.server_cpu_us_per_op
                            .map_or("–".to_owned(), |c| format!("{c:.1}"))
                    );
                }
            }
        }
        let Some(subject) = subject else {
            return out;
        };
        let others: Vec<&String> = self.targets.iter().filter(|t| *t != subject).collect();
        if others.is_empty() {
            return out;
        }
        let _ = writeln!(out);
        let mut header = String::from("| scenario |");
        let mut rule = String::from("|---|");
        for o in &others {
            let _ = write!(header, " {subject} / {o} |");
            rule.push_str("---:|");
        }
        let _ = writeln!(out, "{header}\n{rule}");
        for s in &scenarios {
            if self.row(*s, subject).is_none() {
                continue;
            }
            let mut line = format!("| {s} |");
            for o in &others {
                match self.ratio(*s, subject, o) {
                    Some((x, stand_in)) => {
                        let mark = if stand_in { "*" } else { "" };
                        let _ = write!(line, " {x:.3}{mark} |");
                    }
                    None => line.push_str(" – |"),
                }
            }
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(
            out,
            "\n`*`: against the reference's stand-in figure (jwks → its discovery; EdDSA → its ES256)."
        );
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::scenario::new_histogram;

    fn m(ok: u64, secs: f64, latency_us: u64) -> Measurement {
        let mut h = new_histogram().unwrap();
        h.record(latency_us).unwrap();
        Measurement {
            ok,
            errors: 0,
            seconds: secs,
            latency: h,
            error_samples: vec![],
            peak_rss_mib: None,
            server_cpu_us_per_op: Some(latency_us as f64 / 10.0),
        }
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn ratios_use_medians_and_stand_ins() {
        let mut r = Results::default();
        r.add(Scenario::Cc, "tessera", m(2000, 10.0, 500));
        r.add(Scenario::Cc, "tessera", m(3000, 10.0, 500));
        r.add(Scenario::Cc, "tessera", m(9000, 10.0, 500));
        r.add(Scenario::Cc, "ceiling", m(10000, 10.0, 100));
        r.add(Scenario::Discovery, "ceiling", m(1000, 1.0, 100));
        r.add(Scenario::Jwks, "tessera", m(900, 1.0, 100));
        let (x, stand_in) = r.ratio(Scenario::Cc, "tessera", "ceiling").unwrap();
        assert!((x - 0.3).abs() < 1e-9 && !stand_in);
        let (x, stand_in) = r.ratio(Scenario::Jwks, "tessera", "ceiling").unwrap();
        assert!((x - 0.9).abs() < 1e-9 && stand_in);
        assert!(r.ratio(Scenario::Refresh, "tessera", "ceiling").is_none());
        let table = r.table(Some("tessera"));
        assert!(
            table.contains("| cc | tessera | 300 | 0.50 | 0.50 | 0 | – | 50.0 |"),
            "{table}"
        );
        assert!(table.contains("| jwks | 0.900* |"), "{table}");
    }
}
