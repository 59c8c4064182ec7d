//! A live display of one or several rollouts: redrawn in place on a terminal, and elsewhere
//! (pipes, CI logs) a block of plain lines for a rollout whenever something a person would
//! notice about it changes.
//!
//! `status --watch`, `status --all --watch` and `canary demo` all draw through here, from the
//! same lines [`RolloutStatus`] renders.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output::outln;
use crate::rollout_view::RolloutStatus;

/// Steps are drawn as this many units each, so a step's hold fills its part of the bar.
const UNITS_PER_STEP: u64 = 1000;

/// The display `--watch` and the demo redraw.
pub struct LiveView {
    display: Display,
}

enum Display {
    Terminal {
        multi: MultiProgress,
        panels: Vec<Panel>,
    },
    /// What was last printed of each rollout, by rollout id.
    Plain {
        last: HashMap<String, String>,
    },
    Silent,
}

/// One rollout on a terminal: headline and plan, a bar over the steps, a line per verdict.
struct Panel {
    header: ProgressBar,
    bar: ProgressBar,
    lines: Vec<ProgressBar>,
}

impl LiveView {
    /// A display on stdout: redrawn in place on a terminal, plain lines otherwise.
    pub fn stdout() -> LiveView {
        let display = if std::io::stdout().is_terminal() {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout_with_hz(10));
            Display::Terminal { multi, panels: Vec::new() }
        } else {
            Display::Plain { last: HashMap::new() }
        };
        LiveView { display }
    }

    /// A display that draws nothing (for `--json`).
    pub fn silent() -> LiveView {
        LiveView { display: Display::Silent }
    }

    /// Redraws with the latest status and an optional extra line (the demo's traffic).
    pub fn update(&mut self, status: &RolloutStatus, footer: Option<&str>) -> anyhow::Result<()> {
        self.update_all(std::slice::from_ref(status), footer)
    }

    /// Redraws several rollouts, one below the other, the footer under the last.
    pub fn update_all(&mut self, statuses: &[RolloutStatus], footer: Option<&str>) -> anyhow::Result<()> {
        match &mut self.display {
            Display::Silent => Ok(()),
            Display::Plain { last } => print_changes(last, statuses, footer),
            Display::Terminal { multi, panels } => {
                while panels.len() < statuses.len() {
                    panels.push(Panel::add(multi));
                }
                let count = statuses.len();
                for (i, (panel, status)) in panels.iter_mut().zip(statuses).enumerate() {
                    panel.draw(multi, status, if i + 1 == count { footer } else { None });
                }
                Ok(())
            }
        }
    }

    /// Leaves the last drawing of one rollout on screen.
    pub fn finish(&mut self, status: &RolloutStatus, footer: Option<&str>) -> anyhow::Result<()> {
        self.finish_all(std::slice::from_ref(status), footer)
    }

    /// Leaves the last drawing of several rollouts on screen.
    pub fn finish_all(&mut self, statuses: &[RolloutStatus], footer: Option<&str>) -> anyhow::Result<()> {
        self.update_all(statuses, footer)?;
        if let Display::Terminal { panels, .. } = &self.display {
            for panel in panels {
                panel.finish();
            }
            // Let the last frame reach the terminal before whatever prints next.
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

/// Prints the lines of every rollout whose phase, step, judge decision or verdict words
/// changed since they were last printed, so a log tells the story without a line every poll.
fn print_changes(
    last: &mut HashMap<String, String>,
    statuses: &[RolloutStatus],
    footer: Option<&str>,
) -> anyhow::Result<()> {
    let changed: Vec<&RolloutStatus> = statuses
        .iter()
        .filter(|status| {
            let key = change_key(status);
            let new = last.get(&status.id) != Some(&key);
            last.insert(status.id.clone(), key);
            new
        })
        .collect();
    for (i, status) in changed.iter().enumerate() {
        for line in status.lines() {
            outln!("{line}")?;
        }
        if let (Some(footer), true) = (footer, i + 1 == changed.len()) {
            outln!("{footer}")?;
        }
        outln!()?;
    }
    Ok(())
}

fn change_key(status: &RolloutStatus) -> String {
    format!(
        "{}|{}|{:?}|{:?}",
        status.phase,
        status.step,
        status.judge.as_ref().map(|j| &j.decision),
        status.judge.as_ref().map(|j| j.verdicts.iter().map(|v| &v.verdict).collect::<Vec<_>>())
    )
}

fn text_style() -> ProgressStyle {
    ProgressStyle::with_template("{wide_msg}").expect("static template")
}

impl Panel {
    /// A panel added below everything already on `multi`.
    fn add(multi: &MultiProgress) -> Panel {
        let header = multi.add(ProgressBar::new(1).with_style(text_style()));
        let style = ProgressStyle::with_template("{prefix:>12} [{bar:36.cyan/blue}] {wide_msg}")
            .expect("static template")
            .progress_chars("█▌ ");
        let bar = multi.add(ProgressBar::new(1).with_style(style));
        Panel { header, bar, lines: Vec::new() }
    }

    fn draw(&mut self, multi: &MultiProgress, status: &RolloutStatus, footer: Option<&str>) {
        self.header.set_message(format!("{}\n{}", status.headline(), status.plan_line()));
        let steps = status.steps.len().max(1) as u64;
        self.bar.set_length(steps * UNITS_PER_STEP);
        let within = match (status.held_seconds, status.hold_seconds) {
            _ if status.phase == "promoted" => UNITS_PER_STEP,
            (Some(held), Some(hold)) if hold > 0.0 => ((held / hold).min(1.0) * UNITS_PER_STEP as f64) as u64,
            (Some(_), Some(_)) => UNITS_PER_STEP,
            _ => 0,
        };
        self.bar.set_position(status.step as u64 * UNITS_PER_STEP + within);
        self.bar.set_prefix(format!("step {}/{}", status.step + 1, status.steps.len()));
        self.bar.set_message(status.step_line());
        let mut texts: Vec<String> = status.verdict_lines().into_iter().map(|l| format!("  {l}")).collect();
        texts.extend(status.outcome_line());
        texts.extend(footer.map(str::to_owned));
        while self.lines.len() < texts.len() {
            // Below this panel's last line, above the next panel.
            let after = self.lines.last().unwrap_or(&self.bar);
            let line = multi.insert_after(after, ProgressBar::new(1).with_style(text_style()));
            self.lines.push(line);
        }
        for (i, line) in self.lines.iter().enumerate() {
            line.set_message(texts.get(i).cloned().unwrap_or_default());
        }
    }

    fn finish(&self) {
        self.header.finish();
        self.bar.finish();
        for line in &self.lines {
            line.finish();
        }
    }
}
