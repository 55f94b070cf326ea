//! Logging set-up: human-readable text by default, one JSON object per line with
//! `log.format = "json"`. Called once, from `main` (tests opt in with `TEST_LOG`).
//! The level filter sits behind a reload handle, so a configuration reload can
//! change `log.level` while the worker runs.

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

use crate::config::{LogConfig, LogFormat};

/// Changes the filter of the installed subscriber; set by [`init`] unless
/// `RUST_LOG` decides the filter (it wins over `log.level`, at start and on reload).
static LEVEL: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `log.level`.
pub fn init(config: &LogConfig) {
    let from_env = EnvFilter::try_from_default_env().ok();
    let overridden = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(&config.level));
    let (filter, handle) = reload::Layer::new(filter);
    // Colour only for a person at a terminal, never into a log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (text, json) = match config.format {
        LogFormat::Text => (
            Some(fmt::layer().with_writer(std::io::stderr).with_ansi(ansi)),
            None,
        ),
        LogFormat::Json => (
            None,
            Some(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            ),
        ),
    };
    // `try_init` so that a second call (tests) keeps the first subscriber.
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .try_init()
        .is_ok();
    if installed && !overridden {
        let _ = LEVEL.set(handle);
    }
}

/// Applies a new `log.level` (already validated); `false` when it cannot
/// take effect: `RUST_LOG` is set, or no subscriber of ours is installed.
pub fn set_level(level: &str) -> bool {
    let Some(handle) = LEVEL.get() else {
        return false;
    };
    match EnvFilter::try_new(level) {
        Ok(filter) => handle.reload(filter).is_ok(),
        Err(_) => false,
    }
}
