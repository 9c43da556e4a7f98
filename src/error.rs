//! The one error type of dlrt.
//!
//! Every fallible public function returns [`Result<T>`]. Variants carry the place (file, layer,
//! field) and what was expected, so a message can be acted on without reading the source.

use std::path::PathBuf;

/// What went wrong, with enough structure to name the culprit.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of range or inconsistent with another one.
    #[error("invalid config: `{field}` = {value}: {expected}")]
    InvalidConfig {
        /// Name of the offending key, as written in the config.
        field: String,
        /// The value that was given.
        value: String,
        /// What a valid value looks like.
        expected: String,
    },
    /// A tensor or matrix has the wrong shape.
    #[error("shape mismatch in {context}: expected {expected}, got {got}")]
    Shape {
        /// Where the shapes met (layer, factor, file).
        context: String,
        /// The shape that was required.
        expected: String,
        /// The shape that was found.
        got: String,
    },
    /// A NaN or infinity appeared where finite numbers are required.
    #[error("non-finite value in {context}")]
    NonFinite {
        /// Which quantity (loss at step k, factor S of layer 2, …).
        context: String,
    },
    /// A singular value decomposition did not converge.
    #[error("SVD did not converge in {context}")]
    SvdNoConvergence {
        /// Which matrix was being decomposed.
        context: String,
    },
    /// An operation was asked of a component that does not support it.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A broken internal invariant: a bug in dlrt, not a problem with the input.
    #[error("internal error (a bug in dlrt, please report it): {0}")]
    Internal(String),
    /// The compute device or its runtime failed: CUDA not usable, a sync that returned an
    /// error.
    #[error("device: {0}")]
    Device(String),
    /// A data or weight file is malformed.
    #[error("{path}: {field}: expected {expected}, got {got}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// Which field or part of the file (magic number, item count, tensor name, …).
        field: String,
        /// What a valid file has there.
        expected: String,
        /// What this file has.
        got: String,
    },
    /// An external program (npm, apt-get, dpkg-deb) could not be started or failed.
    #[error("`{command}` {problem}")]
    Command {
        /// The command line that was run.
        command: String,
        /// What went wrong: could not start (and why the program is needed), or the exit
        /// status with the program's stderr.
        problem: String,
    },
    /// Writing the command's output (a table, a summary line) failed, e.g. a closed pipe.
    #[error("writing the output: {0}")]
    Output(#[source] std::io::Error),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::InvalidConfig`].
    pub fn config(field: &str, value: impl std::fmt::Display, expected: &str) -> Self {
        Error::InvalidConfig {
            field: field.to_string(),
            value: value.to_string(),
            expected: expected.to_string(),
        }
    }

    /// Shorthand for [`Error::BadFile`].
    pub fn bad_file(
        path: impl Into<PathBuf>,
        field: impl Into<String>,
        expected: impl std::fmt::Display,
        got: impl std::fmt::Display,
    ) -> Self {
        Error::BadFile {
            path: path.into(),
            field: field.into(),
            expected: expected.to_string(),
            got: got.to_string(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// An [`Error::Io`] of kind `NotFound` that says what is missing at `path`.
    pub fn not_found(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Error::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, what.into()))
    }

    /// Shorthand for [`Error::Shape`].
    pub fn shape(context: impl Into<String>, expected: impl Into<String>, got: impl Into<String>) -> Self {
        Error::Shape { context: context.into(), expected: expected.into(), got: got.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_kind_of_failure_it_is() {
        let closed = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "broken pipe");
        assert_eq!(Error::Output(closed).to_string(), "writing the output: broken pipe");
        let bug = Error::Internal("a benchmark timed no step".into()).to_string();
        assert!(bug.starts_with("internal error (a bug in dlrt") && bug.ends_with("timed no step"), "{bug}");
        assert_eq!(Error::Device("sync failed".into()).to_string(), "device: sync failed");
        let full = Error::Output(std::io::ErrorKind::StorageFull.into());
        assert!(std::error::Error::source(&full).is_some(), "the I/O error is the source");
    }
}
