//! Stamps the binary with its git commit and build date for `version`, `/version` and `build_info`.
use std::process::Command;

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    // Container builds have no .git; they pass the commit in instead.
    let commit = std::env::var("PROFILE_WORKER_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| output("git", &["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let date = output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_else(|| "unknown".into());
    // Named PW_BUILD_* because cargo also exports these to test processes, where a PROFILE_WORKER_*
    // name would be read as a configuration key.
    println!("cargo:rustc-env=PW_BUILD_COMMIT={commit}");
    println!("cargo:rustc-env=PW_BUILD_DATE={date}");
    println!("cargo:rerun-if-env-changed=PROFILE_WORKER_GIT_COMMIT");
    // Watch this checkout's HEAD and the branch it points at — not every branch — so that a
    // commit in another worktree of the same repository does not rebuild this one.
    if let Some(head) = output("git", &["rev-parse", "--git-path", "HEAD"]) {
        println!("cargo:rerun-if-changed={head}");
    }
    if let Some(branch) = output("git", &["symbolic-ref", "-q", "HEAD"])
        && let Some(path) = output("git", &["rev-parse", "--git-path", &branch])
        && std::path::Path::new(&path).exists()
    {
        println!("cargo:rerun-if-changed={path}");
    }
}
