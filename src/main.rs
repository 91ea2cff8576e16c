use std::process::ExitCode;

fn main() -> ExitCode {
    divert_webhook::cli::run(divert_webhook::cli::parse())
}
