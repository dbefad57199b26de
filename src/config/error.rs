//! Config errors: each names the bad key (`routes[2].upstream`) and, when known, its line.

use std::fmt;
use std::path::PathBuf;

/// One problem in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path such as `routes[2].upstream` (indices 0-based); empty for TOML syntax errors.
    pub path: String,
    /// 1-based line in the config file.
    pub line: Option<usize>,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, line: Option<usize>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            line,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one config file, in file order (by line, then key path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// Sorts into file order; errors without a line come first.
    pub fn new(mut errors: Vec<ConfigError>) -> Self {
        errors.sort_by(|a, b| (a.line, &a.path).cmp(&(b.line, &b.path)));
        ConfigErrors(errors)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for ConfigErrors {
    /// One error per line, no trailing newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Why `Config::load` failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read config file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    // The errors are shown in full, not as a `source`: `hoptrace check` prints this directly.
    #[error("{}: {}\n{errors}", path.display(), error_count(errors.len()))]
    Invalid { path: PathBuf, errors: ConfigErrors },
    /// The file is valid but an `OTEL_*` environment variable is not.
    #[error("invalid OpenTelemetry environment: {}\n{errors}", error_count(errors.len()))]
    Env { errors: ConfigErrors },
}

fn error_count(n: usize) -> String {
    if n == 1 {
        "1 error".to_owned()
    } else {
        format!("{n} errors")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_forms() {
        let with_line = ConfigError::new("routes[2].upstream", Some(31), "\"pay\" is not defined");
        assert_eq!(
            with_line.to_string(),
            "routes[2].upstream: \"pay\" is not defined (line 31)"
        );
        let no_line = ConfigError::new("service", None, "missing required table [service]");
        assert_eq!(
            no_line.to_string(),
            "service: missing required table [service]"
        );
        let syntax = ConfigError::new("", Some(3), "syntax error: invalid key");
        assert_eq!(syntax.to_string(), "syntax error: invalid key (line 3)");
    }

    #[test]
    fn sorted_by_line_then_path_and_counted() {
        let errors = ConfigErrors::new(vec![
            ConfigError::new("b", Some(2), "x"),
            ConfigError::new("a", Some(2), "x"),
            ConfigError::new("c", Some(1), "x"),
        ]);
        assert_eq!(
            errors.to_string(),
            "c: x (line 1)\na: x (line 2)\nb: x (line 2)"
        );
        let load = LoadError::Invalid {
            path: PathBuf::from("hoptrace.toml"),
            errors,
        };
        assert!(
            load.to_string()
                .starts_with("hoptrace.toml: 3 errors\nc: x (line 1)\n")
        );
    }
}
