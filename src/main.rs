//! The `dlrt` binary: parses the command line and calls the library.

use std::error::Error as _;
use std::process::ExitCode;

use clap::Parser;
use dlrt::cli::{self, Cli, Command};

// Why not the system allocator: see Cargo.toml.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its place in `mi_option_t`, the same in mimalloc 2 and 3;
/// libmimalloc-sys names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc never to hand freed memory back to the OS. A training step frees and
/// reallocates the same activation buffers; purged after mimalloc's delay (a second), they come
/// back as fresh pages that the kernel faults in and zeroes, step after step.
fn keep_freed_memory() {
    // SAFETY: sets a plain integer option; mimalloc reads it at each purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

fn main() -> ExitCode {
    keep_freed_memory();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Option 15 is the purge delay: mimalloc 3 documents its default as 1,000 ms.
    #[test]
    fn option_15_is_the_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads an integer option.
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }, 1000);
        keep_freed_memory();
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }, -1);
    }
}
