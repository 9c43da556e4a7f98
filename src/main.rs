//! The `dlrt` binary: parses the command line and calls the library.

use clap::Parser;
use dlrt::cli::{self, Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Matrix(args) => cli::matrix(&args, &mut std::io::stdout().lock())?,
    }
    Ok(())
}
