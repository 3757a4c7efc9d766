//! `tap`: parse the arguments, run, print the one error, exit with its code.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = tap::cli::Cli::parse();
    let json = cli.json;
    match tap::app::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tap::output::Output::new(json).error(&e.message);
            ExitCode::from(e.exit_code())
        }
    }
}
