//! A session: the profile, the logged-in client, the used connection, name caches, and the
//! Rhai source chunks evaluated so far (so `.rhai(f)` can send `f`'s source to the engine).

use crate::client::{Auth, Client};
use crate::config::{Kind, Profile};
use crate::error::{Error, Result};
use crate::output::Output;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub struct Session {
    pub client: Client,
    pub profile: Profile,
    pub out: Output,
    /// The connection chosen by `use`.
    pub used: Mutex<Option<crate::api::connection::Connection>>,
    /// Source text and AST of every chunk evaluated, newest last.
    pub chunks: Mutex<Vec<(String, rhai::AST)>>,
    /// Set by Ctrl-C while a line runs.
    pub interrupted: AtomicBool,
    /// Name caches for completion: flows, connections, tables of the used connection.
    pub names: Mutex<Names>,
}

#[derive(Debug, Default, Clone)]
pub struct Names {
    pub flows: Vec<String>,
    pub connections: Vec<String>,
    pub tables: Vec<String>,
}

impl Session {
    /// Connect with `profile`: for the embedded profile, start the engine when nothing answers.
    pub fn connect(profile: Profile, out: Output) -> Result<Self> {
        let server = profile.server();
        let auth = match profile.kind {
            Kind::Embedded => {
                let dir = profile.data_dir();
                ensure_engine(&server, &dir, &out)?;
                Auth::AccessCode(crate::datadir::access_code(&dir)?)
            }
            Kind::Enterprise => Auth::AccessCode(profile.access_code.clone().unwrap_or_default()),
            Kind::Cloud => Auth::Cloud {
                access_key: profile.access_key.clone().unwrap_or_default(),
                secret_key: profile.secret_key.clone().unwrap_or_default(),
            },
        };
        let client = Client::new(&server, auth)?;
        if profile.kind == Kind::Embedded {
            client.set_embedded();
        }
        client.login()?;
        Ok(Self {
            client,
            profile,
            out,
            used: Mutex::new(None),
            chunks: Mutex::new(Vec::new()),
            interrupted: AtomicBool::new(false),
            names: Mutex::new(Names::default()),
        })
    }

    /// A session that has not connected (its client would fail every call): for tests of what
    /// needs a session but no server, such as the script engine's function list.
    #[cfg(test)]
    pub(crate) fn offline() -> Self {
        Self {
            client: Client::new("http://127.0.0.1:9", Auth::AccessCode(String::new())).expect("client"),
            profile: Profile::embedded(),
            out: Output::new(false),
            used: Mutex::new(None),
            chunks: Mutex::new(Vec::new()),
            interrupted: AtomicBool::new(false),
            names: Mutex::new(Names::default()),
        }
    }

    pub fn is_embedded(&self) -> bool {
        self.profile.kind == Kind::Embedded
    }

    pub fn interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }

    /// Sleep in small steps, returning early (with an error) on Ctrl-C.
    pub fn sleep(&self, d: Duration) -> Result<()> {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if self.interrupted() {
                return Err(Error::usage("interrupted"));
            }
            std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
        }
        Ok(())
    }

    pub fn used_connection(&self) -> Option<crate::api::connection::Connection> {
        self.used.lock().ok().and_then(|u| u.clone())
    }
}

/// Start `tap engine` in the background when nothing answers at `server`, and wait until it does.
pub fn ensure_engine(server: &str, data_dir: &std::path::Path, out: &Output) -> Result<()> {
    if crate::local::answers(server) {
        return Ok(());
    }
    let exe = std::env::current_exe().map_err(|e| Error::internal(format!("cannot find the tap executable: {e}")))?;
    crate::datadir::create_dir_private(data_dir)?;
    let log = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(data_dir.join("engine.out"))?
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("engine").arg("--listen").arg(server).arg("--data-dir").arg(data_dir);
    cmd.stdin(std::process::Stdio::null()).stdout(log.try_clone()?).stderr(log);
    // Its own process group: Ctrl-C in the shell must not stop the engine.
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    let mut child = cmd.spawn().map_err(|e| Error::unavailable(format!("cannot start the embedded engine: {e}")))?;
    out.notice(&format!("started the embedded engine at {server} (data in {})", data_dir.display()));
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if crate::local::answers(server) {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(data_dir.join("engine.out")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(3).collect();
            return Err(Error::unavailable(format!(
                "the embedded engine exited ({status}) before answering at {server}: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(Error::unavailable(format!(
        "the embedded engine did not answer at {server} within 20 s; see {}",
        data_dir.join("engine.log").display()
    )))
}
