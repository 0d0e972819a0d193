//! Logging: `tracing` everywhere, with raft-rs's slog lines bridged into it so
//! they carry the span (store, region, peer) of the handler that caused them.

use tracing_subscriber::EnvFilter;

/// The slog logger handed to raft-rs: every record becomes a tracing event.
pub fn raft_logger() -> slog::Logger {
    slog::Logger::root(tracing_slog::TracingSlogDrain, slog::o!())
}

/// Installs a subscriber reading `RUST_LOG` (default `info` for Tessel,
/// `warn` for raft-rs). Safe to call more than once.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,tessel=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// For tests: like [`init`] but quiet unless `RUST_LOG` says otherwise.
pub fn init_for_tests() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
