//! Profiles: which cluster the shell talks to. Resolved from (in order) `--profile`, the
//! environment (`TAP_PROFILE`, `TAP_SERVER`, `TAP_ACCESS_CODE`, `TAP_ACCESS_KEY`,
//! `TAP_SECRET_KEY`, `TAP_DATA_DIR`) and the TOML file in the platform config dir
//! (`TAP_CONFIG_DIR` overrides the dir), mode 0600 because it holds secrets.
//!
//! Kinds: `embedded` (E: the engine on this machine, the default when nothing is configured),
//! `enterprise` (L: TapData Enterprise/Community, server + access code), `cloud` (C: TapData
//! Cloud, access key + secret key).

pub mod tapflow;
pub mod wizard;

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

pub const CLOUD_SERVER: &str = "https://cloud.tapdata.net";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Embedded,
    Enterprise,
    Cloud,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
    /// Embedded only: the engine's data dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

impl Profile {
    pub fn embedded() -> Self {
        Profile {
            kind: Kind::Embedded,
            server: None,
            access_code: None,
            access_key: None,
            secret_key: None,
            data_dir: None,
        }
    }
    pub fn server(&self) -> String {
        match (&self.kind, &self.server) {
            (_, Some(s)) => s.clone(),
            (Kind::Cloud, None) => CLOUD_SERVER.to_string(),
            _ => crate::local::DEFAULT_LISTEN.to_string(),
        }
    }
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(default_data_dir)
    }
    /// One line describing the profile, secrets masked.
    pub fn describe(&self) -> String {
        match self.kind {
            Kind::Embedded => format!("embedded engine at {} (data {})", self.server(), self.data_dir().display()),
            Kind::Enterprise => format!("TapData Enterprise/Community at {} (access code ******)", self.server()),
            Kind::Cloud => format!(
                "TapData Cloud at {} (access key {}, secret ******)",
                self.server(),
                mask(self.access_key.as_deref().unwrap_or(""))
            ),
        }
    }
}

/// Keep the first 4 characters of a key, mask the rest.
pub fn mask(s: &str) -> String {
    let head: String = s.chars().take(4).collect();
    format!("{head}******")
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

pub fn config_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TAP_CONFIG_DIR") {
        return PathBuf::from(d);
    }
    directories::ProjectDirs::from("", "", "tap")
        .map(|p| p.config_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from(".tap"))
}

pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TAP_DATA_DIR") {
        return PathBuf::from(d);
    }
    directories::ProjectDirs::from("", "", "tap")
        .map(|p| p.data_dir().join("engine"))
        .unwrap_or_else(|| PathBuf::from(".tap/engine"))
}

pub fn config_path() -> PathBuf {
    config_dir().join("config.toml")
}

impl File {
    pub fn load() -> Result<Option<File>> {
        let path = config_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::config(format!("cannot read {}: {e}", path.display()))),
        };
        toml::from_str(&text).map(Some).map_err(|e| Error::config(format!("{}: {e}", path.display())))
    }

    pub fn save(&self) -> Result<()> {
        let dir = config_dir();
        std::fs::create_dir_all(&dir).map_err(|e| Error::config(format!("cannot create {}: {e}", dir.display())))?;
        let text = toml::to_string_pretty(self).map_err(|e| Error::internal(e.to_string()))?;
        crate::datadir::write_private(&config_path(), &format!("# tap profiles (holds secrets: mode 0600)\n{text}"))
    }
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

/// How the profile was chosen (for the one-time notice).
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Flag,
    Environment,
    File,
    /// Nothing configured: the embedded default.
    Default,
}

/// Resolve the profile for this run. `None` means nothing is configured at all (the caller
/// runs the first-run setup when there is a terminal, else uses the embedded default).
pub fn resolve(flag: Option<&str>) -> Result<(String, Profile, Source)> {
    let file = File::load()?;
    let wanted = flag.map(str::to_string).or_else(|| env("TAP_PROFILE"));
    let source_for_name = if flag.is_some() { Source::Flag } else { Source::Environment };
    let mut chosen: Option<(String, Profile, Source)> = None;
    if let Some(name) = wanted {
        let f = file.clone().unwrap_or_default();
        let p = f.profiles.get(&name).cloned().ok_or_else(|| {
            let known: Vec<&String> = f.profiles.keys().collect();
            Error::config(format!(
                "no profile named {name:?} in {}; profiles: {} — `tap config add {name}` creates it",
                config_path().display(),
                if known.is_empty() {
                    "none".into()
                } else {
                    known.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                }
            ))
        })?;
        chosen = Some((name, p, source_for_name));
    }
    // Environment credentials make a profile of their own (CI).
    if chosen.is_none() {
        if let (Some(ak), Some(sk)) = (env("TAP_ACCESS_KEY"), env("TAP_SECRET_KEY")) {
            let p = Profile {
                kind: Kind::Cloud,
                server: env("TAP_SERVER"),
                access_key: Some(ak),
                secret_key: Some(sk),
                ..Profile::embedded()
            };
            chosen = Some(("env".into(), p, Source::Environment));
        } else if let Some(code) = env("TAP_ACCESS_CODE") {
            let server = env("TAP_SERVER")
                .ok_or_else(|| Error::config("TAP_ACCESS_CODE is set but TAP_SERVER (host:port) is not"))?;
            let p = Profile {
                kind: Kind::Enterprise,
                server: Some(server),
                access_code: Some(code),
                ..Profile::embedded()
            };
            chosen = Some(("env".into(), p, Source::Environment));
        }
    }
    if chosen.is_none()
        && let Some(f) = &file
    {
        let name = f.default.clone().or_else(|| f.profiles.keys().next().cloned());
        if let Some(name) = name
            && let Some(p) = f.profiles.get(&name)
        {
            chosen = Some((name, p.clone(), Source::File));
        }
    }
    let (name, mut profile, source) =
        chosen.unwrap_or_else(|| ("embedded".into(), Profile::embedded(), Source::Default));
    // Environment overrides for the fields of the chosen profile.
    if let Some(s) = env("TAP_SERVER") {
        profile.server = Some(s);
    }
    if profile.kind == Kind::Embedded
        && let Some(d) = env("TAP_DATA_DIR")
    {
        profile.data_dir = Some(PathBuf::from(d));
    }
    validate(&name, &profile)?;
    Ok((name, profile, source))
}

pub fn validate(name: &str, p: &Profile) -> Result<()> {
    match p.kind {
        Kind::Enterprise if p.server.is_none() || p.access_code.is_none() => Err(Error::config(format!(
            "profile {name:?} (enterprise) needs server and access_code — `tap config` sets them"
        ))),
        Kind::Cloud if p.access_key.is_none() || p.secret_key.is_none() => Err(Error::config(format!(
            "profile {name:?} (cloud) needs access_key and secret_key — `tap config` sets them"
        ))),
        _ => Ok(()),
    }
}
