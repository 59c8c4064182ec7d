//! A bounded summary of JUnit XML reports, read as a stream.
//!
//! A suite of 100,000 tests writes a report of many megabytes; the controller keeps only what
//! a person reads: the counts, the slowest tests and the first failures with their messages
//! (each cut to [`MAX_MESSAGE`] characters). Reports of several shards merge into one summary.
//! Nothing grows with the report but the counts.

use std::io::BufRead;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The slowest tests a summary keeps.
pub const MAX_SLOWEST: usize = 5;
/// The failed tests a summary keeps.
pub const MAX_FAILURES: usize = 10;
/// The characters of a failure message a summary keeps.
pub const MAX_MESSAGE: usize = 400;
/// The characters of a test's name a summary keeps.
const MAX_NAME: usize = 200;

/// One of the slowest tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlowTest {
    /// `classname › name`, or the name alone.
    pub name: String,
    /// Its time in seconds.
    pub seconds: f64,
}

/// One failed test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailedTest {
    /// `classname › name`, or the name alone.
    pub name: String,
    /// The failure's message (its `message` attribute, else its text), cut short.
    pub message: String,
}

/// What a person needs from a test report, bounded whatever its size.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JunitSummary {
    /// Test cases.
    pub tests: u64,
    /// Test cases that failed or errored.
    pub failures: u64,
    /// Test cases skipped.
    pub skipped: u64,
    /// Sum of the test cases' times, in seconds.
    pub seconds: f64,
    /// The slowest tests, slowest first.
    pub slowest: Vec<SlowTest>,
    /// The first failures, in report order.
    pub failed: Vec<FailedTest>,
}

/// Why a report could not be read.
#[derive(Debug, thiserror::Error)]
#[error("the JUnit report is not valid XML at byte {position}: {reason}")]
pub struct JunitError {
    /// Where the reader stopped.
    pub position: u64,
    /// What it found.
    pub reason: String,
}

/// The test case being read.
#[derive(Default)]
struct Case {
    name: String,
    seconds: f64,
    failed: bool,
    skipped: bool,
    message: String,
    /// Whether the failure's text is being collected (no `message` attribute).
    collecting: bool,
}

impl JunitSummary {
    /// Reads one report.
    pub fn read(source: impl BufRead) -> Result<JunitSummary, JunitError> {
        let mut reader = Reader::from_reader(source);
        let mut summary = JunitSummary::default();
        let mut buf = Vec::new();
        let mut case: Option<Case> = None;
        // The names of the open `<testsuite>`s: a test is named after the innermost one.
        let mut suites: Vec<String> = Vec::new();
        loop {
            let error = |reader: &Reader<_>, e: &dyn std::fmt::Display| JunitError {
                position: reader.buffer_position(),
                reason: e.to_string(),
            };
            let event = reader.read_event_into(&mut buf).map_err(|e| error(&reader, &e))?;
            match event {
                Event::Start(e) if e.name().as_ref() == "testsuite" => {
                    suites.push(cut(&attribute(&e, "name").unwrap_or_default(), MAX_NAME));
                }
                Event::End(e) if e.name().as_ref() == "testsuite" => {
                    suites.pop();
                }
                Event::Start(e) => case = open(&e, case, &mut summary, suites.last(), false),
                Event::Empty(e) => case = open(&e, case, &mut summary, suites.last(), true),
                Event::End(e) if e.name().as_ref() == "testcase" => {
                    if let Some(done) = case.take() {
                        summary.add(done);
                    }
                }
                Event::End(e) if matches!(e.name().as_ref(), "failure" | "error") => {
                    if let Some(c) = case.as_mut() {
                        c.collecting = false;
                    }
                }
                Event::Text(t) => collect(&mut case, &t.xml10_content()),
                Event::CData(t) => collect(&mut case, &t.xml10_content()),
                Event::GeneralRef(r) => {
                    let text = match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        _ => quick_xml::escape::resolve_predefined_entity(&r.xml10_content()).unwrap_or("").to_owned(),
                    };
                    collect(&mut case, &text);
                }
                Event::Eof => break,
                _ => {}
            }
            buf.clear();
        }
        Ok(summary)
    }

    /// Adds another shard's summary to this one.
    pub fn merge(&mut self, other: JunitSummary) {
        self.tests += other.tests;
        self.failures += other.failures;
        self.skipped += other.skipped;
        self.seconds += other.seconds;
        for slow in other.slowest {
            self.keep_slowest(slow);
        }
        let room = MAX_FAILURES.saturating_sub(self.failed.len());
        self.failed.extend(other.failed.into_iter().take(room));
    }

    /// Passed test cases.
    pub fn passed(&self) -> u64 {
        self.tests.saturating_sub(self.failures + self.skipped)
    }

    /// One line for a person: `30 tests: 29 passed, 1 failed, 0 skipped`.
    pub fn line(&self) -> String {
        format!("{} tests: {} passed, {} failed, {} skipped", self.tests, self.passed(), self.failures, self.skipped)
    }

    fn add(&mut self, case: Case) {
        self.tests += 1;
        self.seconds += case.seconds;
        if case.failed {
            self.failures += 1;
            if self.failed.len() < MAX_FAILURES {
                let message = case.message.trim().to_owned();
                self.failed.push(FailedTest { name: case.name.clone(), message });
            }
        } else if case.skipped {
            self.skipped += 1;
        }
        self.keep_slowest(SlowTest { name: case.name, seconds: case.seconds });
    }

    fn keep_slowest(&mut self, test: SlowTest) {
        if self.slowest.len() == MAX_SLOWEST && self.slowest.last().is_some_and(|s| s.seconds >= test.seconds) {
            return;
        }
        let at = self.slowest.partition_point(|s| s.seconds >= test.seconds);
        self.slowest.insert(at, test);
        self.slowest.truncate(MAX_SLOWEST);
    }
}

/// Handles an opening tag inside the suite named `suite`; returns the test case being read
/// after it.
fn open(
    tag: &BytesStart<'_>,
    case: Option<Case>,
    summary: &mut JunitSummary,
    suite: Option<&String>,
    empty: bool,
) -> Option<Case> {
    match tag.name().as_ref() {
        "testcase" => {
            let name = attribute(tag, "name").unwrap_or_default();
            // Playwright names the suite after the file and node after the `describe`; node's
            // `classname` is always "test", so the suite names a test better than its class.
            let class = suite.cloned().or_else(|| attribute(tag, "classname")).filter(|c| !c.is_empty() && *c != name);
            let name = match class {
                Some(class) => format!("{class} › {name}"),
                None => name,
            };
            let seconds = attribute(tag, "time").and_then(|t| t.parse().ok()).filter(|t: &f64| t.is_finite());
            let case = Case { name: cut(&name, MAX_NAME), seconds: seconds.unwrap_or(0.0), ..Case::default() };
            if empty {
                summary.add(case);
                return None;
            }
            Some(case)
        }
        "failure" | "error" => case.map(|mut c| {
            if !c.failed {
                c.failed = true;
                c.message = cut(&attribute(tag, "message").unwrap_or_default(), MAX_MESSAGE);
                c.collecting = !empty && c.message.is_empty();
            }
            c
        }),
        "skipped" => case.map(|c| Case { skipped: true, ..c }),
        _ => case,
    }
}

/// Adds failure text to the case's message, up to its bound.
fn collect(case: &mut Option<Case>, text: &str) {
    if let Some(c) = case.as_mut().filter(|c| c.collecting) {
        let room = MAX_MESSAGE.saturating_sub(c.message.chars().count());
        c.message.extend(text.chars().take(room));
    }
}

fn attribute(tag: &BytesStart<'_>, key: &str) -> Option<String> {
    let attribute = tag.try_get_attribute(key).ok()??;
    let value = attribute.normalized_value(quick_xml::XmlVersion::Implicit1_0).ok()?;
    Some(value.into_owned())
}

fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(max - 1).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<testsuites>
	<testsuite name="checkout" time="0.3" tests="3" failures="1" skipped="1">
		<testcase name="adds to cart" time="0.012" classname="test"/>
		<testcase name="applies a coupon" time="0.25" classname="checkout">
			<failure type="testCodeFailure" message="expected 200, got 500 &amp; more">
AssertionError: expected 200, got 500
			</failure>
		</testcase>
		<testcase name="pays later" time="0" classname="checkout"><skipped type="skipped"/></testcase>
	</testsuite>
	<testcase name="home &lt;h1&gt;" time="0.1"><error><![CDATA[TypeError: fetch failed]]></error></testcase>
</testsuites>"#;

    #[test]
    fn counts_names_and_messages_of_a_node_report() {
        let s = JunitSummary::read(NODE.as_bytes()).unwrap();
        assert_eq!((s.tests, s.failures, s.skipped, s.passed()), (4, 2, 1, 1));
        assert_eq!(s.failed[0].name, "checkout › applies a coupon");
        assert_eq!(s.failed[0].message, "expected 200, got 500 & more");
        assert_eq!(s.failed[1].name, "home <h1>");
        assert_eq!(s.failed[1].message, "TypeError: fetch failed");
        assert_eq!(s.slowest[0].name, "checkout › applies a coupon");
        assert_eq!(s.slowest[2].name, "checkout › adds to cart", "node's classname \"test\" gives way to the suite");
        assert_eq!(s.line(), "4 tests: 1 passed, 2 failed, 1 skipped");
    }

    #[test]
    fn a_broken_report_says_where() {
        let e = JunitSummary::read("<testsuites><testcase name=\"a\"></testsuite>".as_bytes()).unwrap_err();
        assert!(e.to_string().contains("not valid XML"), "{e}");
    }

    #[test]
    fn a_hundred_thousand_tests_make_a_small_summary() {
        let mut xml = String::from("<testsuites><testsuite name=\"big\">");
        for i in 0..100_000 {
            let time = f64::from(i % 997) / 1000.0;
            if i % 100 == 7 {
                let long = "x".repeat(5_000);
                xml.push_str(&format!(
                    "<testcase name=\"t{i}\" time=\"{time}\"><failure message=\"boom {i} {long}\"/></testcase>"
                ));
            } else {
                xml.push_str(&format!("<testcase name=\"t{i}\" classname=\"suite.{i}\" time=\"{time}\"/>"));
            }
        }
        xml.push_str("</testsuite></testsuites>");
        assert!(xml.len() > 5_000_000);
        let half = xml.len() / 2;
        let mut merged = JunitSummary::read(std::io::BufReader::new(xml.as_bytes())).unwrap();
        merged.merge(JunitSummary::read(xml.as_bytes()).unwrap());
        assert_eq!((merged.tests, merged.failures), (200_000, 2_000));
        assert_eq!(merged.failed.len(), MAX_FAILURES);
        assert_eq!(merged.slowest.len(), MAX_SLOWEST);
        assert!((merged.slowest[0].seconds - 0.996).abs() < 1e-9);
        assert!(merged.failed.iter().all(|f| f.message.chars().count() <= MAX_MESSAGE));
        let stored = serde_json::to_vec(&merged).unwrap();
        assert!(stored.len() < 10_000, "{} bytes of {half}", stored.len());
    }
}
