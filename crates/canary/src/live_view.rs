//! A live display of one or several rollouts: redrawn in place on a terminal, and elsewhere
//! (pipes, CI logs) a block of plain lines for a rollout whenever something a person would
//! notice about it changes.
//!
//! `status --watch`, `status --all --watch` and `canary demo` all draw through here, from the
//! same lines [`crate::rollout_view`] renders.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use canary_core::api::RolloutView;
use canary_core::judge::{StepDecision, Verdict};
use canary_core::rollout::Phase;

use crate::output::outln;
use crate::rollout_view;

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
        last: HashMap<String, ChangeKey>,
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
    pub fn update(&mut self, status: &RolloutView, footer: Option<&str>) -> anyhow::Result<()> {
        self.update_all(std::slice::from_ref(status), footer)
    }

    /// Redraws several rollouts, one below the other, the footer under the last.
    pub fn update_all(&mut self, statuses: &[RolloutView], footer: Option<&str>) -> anyhow::Result<()> {
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
    pub fn finish(&mut self, status: &RolloutView, footer: Option<&str>) -> anyhow::Result<()> {
        self.finish_all(std::slice::from_ref(status), footer)
    }

    /// Leaves the last drawing of several rollouts on screen.
    pub fn finish_all(&mut self, statuses: &[RolloutView], footer: Option<&str>) -> anyhow::Result<()> {
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
    last: &mut HashMap<String, ChangeKey>,
    statuses: &[RolloutView],
    footer: Option<&str>,
) -> anyhow::Result<()> {
    let changed: Vec<&RolloutView> = statuses
        .iter()
        .filter(|status| {
            let key = change_key(status);
            let new = last.get(&status.rollout.id) != Some(&key);
            last.insert(status.rollout.id.clone(), key);
            new
        })
        .collect();
    for (i, status) in changed.iter().enumerate() {
        for line in rollout_view::lines(status) {
            outln!("{line}")?;
        }
        if let (Some(footer), true) = (footer, i + 1 == changed.len()) {
            outln!("{footer}")?;
        }
        outln!()?;
    }
    Ok(())
}

/// What a person would notice change about a rollout: its phase, its step, the judge's
/// decision and each metric's verdict.
#[derive(Debug, PartialEq)]
struct ChangeKey {
    phase: Phase,
    step: usize,
    decision: Option<StepDecision>,
    verdicts: Vec<Verdict>,
}

fn change_key(status: &RolloutView) -> ChangeKey {
    ChangeKey {
        phase: status.rollout.phase,
        step: status.rollout.step,
        decision: status.judge.as_ref().map(|j| j.decision),
        verdicts: status.judge.iter().flat_map(|j| j.verdicts.iter().map(|v| v.verdict)).collect(),
    }
}

/// Where the bar over the steps stands: every step before the current one full, and the
/// current one filled as far as its hold has run (a step without a hold, or a promoted
/// rollout's last, is full).
fn bar_position(status: &RolloutView) -> u64 {
    let within = if status.rollout.phase == Phase::Promoted || status.hold_seconds <= 0.0 {
        UNITS_PER_STEP
    } else {
        ((status.held_seconds / status.hold_seconds).min(1.0) * UNITS_PER_STEP as f64) as u64
    };
    status.rollout.step as u64 * UNITS_PER_STEP + within
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

    fn draw(&mut self, multi: &MultiProgress, status: &RolloutView, footer: Option<&str>) {
        let rollout = &status.rollout;
        self.header.set_message(format!("{}\n{}", rollout_view::headline(rollout), rollout_view::plan_line(rollout)));
        let steps = rollout.steps.len().max(1) as u64;
        self.bar.set_length(steps * UNITS_PER_STEP);
        self.bar.set_position(bar_position(status));
        self.bar.set_prefix(format!("step {}/{}", rollout.step + 1, rollout.steps.len()));
        self.bar.set_message(rollout_view::step_line(status));
        let mut texts: Vec<String> =
            rollout_view::verdict_lines(status).into_iter().map(|l| format!("  {l}")).collect();
        texts.extend(rollout_view::outcome_line(rollout));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_the_steps_behind_and_the_current_one_by_its_hold() {
        let mut view = rollout_view::tests::view();
        assert_eq!(bar_position(&view), UNITS_PER_STEP + UNITS_PER_STEP / 2, "half of step 2's hold");
        view.held_seconds = 60.0;
        assert_eq!(bar_position(&view), 2 * UNITS_PER_STEP, "a hold run over fills its step, no more");
        (view.rollout.phase, view.rollout.step, view.hold_seconds) = (Phase::Promoted, 2, 0.0);
        assert_eq!(bar_position(&view), 3 * UNITS_PER_STEP);
    }
}
