//! A PostgreSQL server of a test's own (initdb into a temporary directory, a spare port), for
//! tests that stop and restart the database: the shared server is never touched. Binaries come
//! from `PW_TEST_PG_BINDIR`, else `pg_config --bindir`, else `PATH`. As root, the server runs as
//! the `postgres` user (initdb refuses root).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

use super::sqs::{OwnMoto, eventually};

pub struct OwnPostgres {
    dir: tempfile::TempDir,
    pub port: u16,
    bindir: Option<PathBuf>,
    as_postgres: bool,
}

fn bindir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("PW_TEST_PG_BINDIR") {
        return Some(dir.into());
    }
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().into())
}

impl OwnPostgres {
    /// initdb, then start on a free port; waits until it accepts connections.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let as_postgres = is_root();
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres", &dir.path().to_string_lossy()])
                .status()
                .expect("chown");
            assert!(status.success());
        }
        let pg = Self {
            dir,
            port: OwnMoto::free_port(),
            bindir: bindir(),
            as_postgres,
        };
        let data = pg.data();
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        pg.start_server().await;
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_string_lossy().into_owned()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = match &self.bindir {
            Some(dir) => dir.join(tool),
            None => Path::new(tool).to_path_buf(),
        };
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = cmd.args(args).output().unwrap_or_else(|e| {
            panic!("cannot run {}: {e}", program.display());
        });
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the server (again) and waits until it answers.
    pub async fn start_server(&self) {
        let data = self.data();
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                &data,
                "-l",
                &log.to_string_lossy(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
        let url = self.admin_url();
        eventually("own PostgreSQL answers", Duration::from_secs(60), || {
            let url = url.clone();
            async move { AsyncPgConnection::establish(&url).await.is_ok() }
        })
        .await;
    }

    /// Fast shutdown: sessions are terminated, as in a failover or a restart.
    pub fn stop_server(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    /// SIGSTOPs the server and its backends: connections stay open but nothing answers, as
    /// with a half-open connection after a failover. [`OwnPostgres::thaw`] resumes them.
    pub fn freeze(&self) {
        self.signal_all("STOP");
    }

    /// SIGCONTs what [`OwnPostgres::freeze`] stopped.
    pub fn thaw(&self) {
        self.signal_all("CONT");
    }

    /// Sends `sig` to the postmaster (first line of `postmaster.pid`) and its children, by pid.
    fn signal_all(&self, sig: &str) {
        let pidfile = self.dir.path().join("data").join("postmaster.pid");
        let text = std::fs::read_to_string(&pidfile).expect("postmaster.pid");
        let postmaster = text.lines().next().expect("pid line").trim().to_string();
        let children = Command::new("ps")
            .args(["-o", "pid=", "--ppid", &postmaster])
            .output()
            .expect("ps");
        let mut pids = vec![postmaster];
        pids.extend(
            String::from_utf8_lossy(&children.stdout)
                .split_whitespace()
                .map(str::to_string),
        );
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .args(&pids)
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{sig} {pids:?}");
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Makes TCP logins of every role but `postgres` need their password (SCRAM), as a managed
    /// database does; `postgres` stays trusted for the test's own set-up.
    pub fn require_passwords(&self) {
        let hba = self.dir.path().join("data").join("pg_hba.conf");
        std::fs::write(
            &hba,
            "local all all trust\n\
             host all postgres 127.0.0.1/32 trust\n\
             host all all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("write pg_hba.conf");
        self.run("pg_ctl", &["-D", &self.data(), "reload"]);
    }

    /// Runs SQL as `postgres` in `database`.
    pub async fn exec(&self, database: &str, sql: &str) {
        let mut conn = AsyncPgConnection::establish(&self.url(database))
            .await
            .expect("connect to own PostgreSQL");
        conn.batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("SQL failed: {e}\n{sql}"));
    }

    /// Creates a database and returns its URL.
    pub async fn create_database(&self, name: &str) -> String {
        let mut admin = AsyncPgConnection::establish(&self.admin_url())
            .await
            .expect("connect to own PostgreSQL");
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create database");
        self.url(name)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.data();
        let program = match &self.bindir {
            Some(dir) => dir.join("pg_ctl"),
            None => "pg_ctl".into(),
        };
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        let _ = cmd
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// Whether this process runs as root (uid 0), read from /proc to avoid a libc dependency.
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
