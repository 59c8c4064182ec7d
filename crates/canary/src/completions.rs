//! `canary completions SHELL`: a completion script generated from the same definition clap
//! parses, so it always knows every subcommand and flag of this build.

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs};

/// Prints the script for `args.shell` on stdout.
pub fn run(args: CompletionsArgs) -> anyhow::Result<()> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "canary", &mut script);
    crate::output::write_bytes(&script)
}
