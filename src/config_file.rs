//! The config file (`--config warren.toml`): a flat TOML table whose keys are the server's flags
//! (`amqp_listen`, `heartbeat`, `default_user`, ...; dashes or underscores). A setting from the
//! file applies only where neither a flag nor a `WARREN_*` variable gave one, so the order of
//! precedence is flags, then the environment, then the file, then the defaults. The file's values
//! are handed to the same argument parser as flags, so they are checked the same way; an unknown
//! key is an error, not a silent typo.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};

#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the config file {path} is not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("the config file {path} has an unknown setting '{key}'")]
    UnknownKey { path: PathBuf, key: String },
    #[error("the config file {path}: '{key}' must be {expected}")]
    Type {
        path: PathBuf,
        key: String,
        expected: &'static str,
    },
}

/// The flags that stand for the file's settings which `matches` (the command line and the
/// environment, as parsed by `command`) left at their defaults.
pub fn args_from_file(
    path: &Path,
    command: &Command,
    matches: &ArgMatches,
) -> Result<Vec<OsString>, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigFileError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let mut args = Vec::new();
    for (key, value) in table {
        let id = key.replace('-', "_");
        let arg = command
            .get_arguments()
            .find(|a| {
                a.get_id().as_str() == id
                    && a.get_long().is_some()
                    && id != "config"
                    && !matches!(a.get_action(), ArgAction::Help | ArgAction::Version)
            })
            .ok_or_else(|| ConfigFileError::UnknownKey {
                path: path.to_owned(),
                key: key.clone(),
            })?;
        if !matches!(
            matches.value_source(&id),
            None | Some(ValueSource::DefaultValue)
        ) {
            continue;
        }
        let flag = format!("--{}", arg.get_long().unwrap_or_default());
        let wrong = |expected| ConfigFileError::Type {
            path: path.to_owned(),
            key: key.clone(),
            expected,
        };
        if matches!(arg.get_action(), ArgAction::SetTrue) {
            match value {
                toml::Value::Boolean(true) => args.push(flag.into()),
                toml::Value::Boolean(false) => {}
                _ => return Err(wrong("true or false")),
            }
            continue;
        }
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s),
                    _ => Err(wrong("a list of strings")),
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            _ => return Err(wrong("a string, a number or a list of strings")),
        };
        args.push(flag.into());
        args.push(text.into());
    }
    Ok(args)
}
