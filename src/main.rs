//! The `dlrt` binary: parses the command line and calls the library.

use std::error::Error as _;
use std::process::ExitCode;

use clap::Parser;
use dlrt::cli::{self, Cli, Command};

// Why not the system allocator: see Cargo.toml.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The message names the file, the field and what was expected; a cause is added
            // only when it says something the message does not (an I/O error's text is in it
            // already). User errors get no backtrace, whatever RUST_BACKTRACE says.
            eprintln!("Error: {e}");
            let mut cause = e.source();
            let mut said = e.to_string();
            while let Some(c) = cause {
                let text = c.to_string();
                if !said.contains(&text) {
                    eprintln!("  caused by: {text}");
                    said.push_str(&text);
                }
                cause = c.source();
            }
            ExitCode::FAILURE
        }
    }
}

fn run() -> dlrt::Result<()> {
    let stdout = &mut std::io::stdout().lock();
    match Cli::parse().command {
        Command::Train(args) => cli::train_cmd(&args, stdout),
        Command::Finetune(args) => cli::finetune_cmd(&args, stdout),
        Command::Eval(args) => cli::eval_cmd(&args, stdout),
        Command::Export(args) => cli::export_cmd(&args, stdout),
        Command::Predict(args) => cli::predict_cmd(&args, stdout),
        Command::Bench(args) => cli::bench_cmd(&args, stdout),
        Command::BenchVit(args) => cli::bench_vit_cmd(&args, stdout),
        Command::BenchOps(args) => cli::bench_ops_cmd(&args, stdout),
        Command::Fetch(args) => cli::fetch_cmd(&args),
        Command::ConvertOnnx(args) => cli::convert_onnx_cmd(&args, stdout),
        Command::Report(args) => cli::report_cmd(&args, stdout),
        Command::Matrix(args) => cli::matrix_cmd(&args, stdout),
        Command::WriteImages(args) => cli::write_images_cmd(&args, stdout),
        Command::ReadImages(args) => cli::read_images_cmd(&args, stdout),
    }
}
