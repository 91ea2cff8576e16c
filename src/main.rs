use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    divert_webhook::cli::run(divert_webhook::cli::Cli::parse())
}
