//! A private PostgreSQL cluster for the outage tests: initdb into a temporary folder (owned
//! by the `postgres` user, since the server will not run as root), started on a free port,
//! and stopped and started again at will.

use std::path::PathBuf;

/// A PostgreSQL cluster of this test's own (initdb in a temporary directory, a free port,
/// trust authentication on loopback), so it can be stopped and started under load. Needs
/// the server binaries (`CARDGATE_TEST_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`)
/// and root, to run them as the `postgres` user.
pub struct PrivateCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

/// Why the private cluster cannot run here, if it cannot.
pub fn cluster_bin() -> Result<PathBuf, String> {
    let bin = match std::env::var("CARDGATE_TEST_PG_BIN") {
        Ok(b) if !b.is_empty() => PathBuf::from(b),
        _ => {
            let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
                .map_err(|_| "no /usr/lib/postgresql (set CARDGATE_TEST_PG_BIN)".to_string())?
                .filter_map(|e| {
                    let e = e.ok()?;
                    let v = e.file_name().to_str()?.parse::<u32>().ok()?;
                    Some((v, e.path().join("bin")))
                })
                .collect();
            found.sort();
            found
                .pop()
                .map(|(_, p)| p)
                .ok_or("no PostgreSQL under /usr/lib/postgresql (set CARDGATE_TEST_PG_BIN)")?
        }
    };
    for tool in ["initdb", "pg_ctl"] {
        if !bin.join(tool).is_file() {
            return Err(format!("{} has no {tool}", bin.display()));
        }
    }
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        return Err("not root: cannot run the cluster as the postgres user".into());
    }
    let has_postgres_user = std::process::Command::new("id")
        .arg("postgres")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_postgres_user {
        return Err("no postgres user".into());
    }
    Ok(bin)
}

impl PrivateCluster {
    /// Creates and starts the cluster, or says why it is skipped (and fails in CI).
    pub async fn start() -> Option<PrivateCluster> {
        let bin = match cluster_bin() {
            Ok(b) => b,
            Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("CI=true but the private PostgreSQL cluster cannot run: {why}")
            }
            Err(why) => {
                eprintln!("SKIPPED: the PostgreSQL outage test needs a private cluster: {why}");
                return None;
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let chown = std::process::Command::new("chown")
            .args(["-R", "postgres:", dir.path().to_str().unwrap()])
            .status()
            .unwrap();
        assert!(chown.success(), "chown the cluster's directory to postgres");
        let cluster = PrivateCluster {
            bin,
            dir,
            port: crate::cli::free_port(),
        };
        let data = cluster.data();
        cluster
            .run(
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
            )
            .await;
        cluster.pg_start().await;
        Some(cluster)
    }

    pub fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs one of the server's tools as the postgres user; asserts it succeeds.
    pub async fn run(&self, tool: &str, args: &[&str]) {
        let out = tokio::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool))
            .args(args)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the server and waits until it accepts connections (`pg_ctl -w`).
    pub async fn pg_start(&self) {
        // fsync=off: a stopped server leaves its writes in the OS's cache, which survives
        // (the machine does not crash), so acknowledged commits are still tested for; it
        // spares the whole-directory fsync that crash recovery does after `-m immediate`,
        // which takes a minute on a busy test machine.
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-l", &log, "-w", "-o", &opts, "start"],
        )
        .await;
    }

    /// Stops the server (`fast`: abort sessions and shut down cleanly; `immediate`: kill
    /// everything at once, recovering from the log at the next start).
    pub async fn pg_stop(&self, mode: &str) {
        self.run("pg_ctl", &["-D", &self.data(), "-w", "-m", mode, "stop"])
            .await;
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
    }
}
