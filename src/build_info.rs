//! What this binary is: version, git commit and build date, stamped by `build.rs`.

/// Crate version from Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Short git commit the binary was built from, or `unknown`.
pub const COMMIT: &str = env!("PW_BUILD_COMMIT");
/// UTC build timestamp (RFC 3339).
pub const BUILD_DATE: &str = env!("PW_BUILD_DATE");

/// `profile-worker 0.1.0 (commit abc123, built 2026-…)`.
pub fn long_version() -> String {
    format!("profile-worker {VERSION} (commit {COMMIT}, built {BUILD_DATE})")
}
