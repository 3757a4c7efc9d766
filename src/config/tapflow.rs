//! A way in for TapFlow users: its `~/.tapflow/config.ini` (`[backend]` with `server` and
//! `access_code`, or `ak` and `sk` for TapData Cloud), and the zero-config `application.yml` of a
//! TapData agent's work dir (`tapdata.conf.backendUrl`, `tapdata.cloud.accessCode`), read into a
//! profile.

use super::{Kind, Profile};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// TapFlow's default config file.
pub fn default_ini() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".tapflow").join("config.ini")
}

/// TapFlow's zero-config file: the dir named in `./.workDir`, else `./application.yml`.
pub fn default_application_yml() -> PathBuf {
    match std::fs::read_to_string(".workDir") {
        Ok(dir) if !dir.trim().is_empty() => Path::new(dir.trim()).join("application.yml"),
        _ => PathBuf::from("application.yml"),
    }
}

/// Read a TapFlow config file (`.ini`, or `.yml`/`.yaml` for `application.yml`) into a profile.
pub fn read(path: &Path) -> Result<Profile> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::config(format!(
            "cannot read {}: {e} (TapFlow keeps its settings in {})",
            path.display(),
            default_ini().display()
        ))
    })?;
    let yaml = path.extension().is_some_and(|e| e == "yml" || e == "yaml");
    let profile = if yaml { parse_application_yml(&text) } else { parse_ini(&text) };
    profile.map_err(|e| Error::config(format!("{}: {}", path.display(), e.message)))
}

/// `[backend]`: `ak` and `sk` (both non-empty) make a Cloud profile, else `server` and
/// `access_code` an Enterprise one; keys are case-insensitive, `;` and `#` start comments.
pub fn parse_ini(text: &str) -> Result<Profile> {
    let mut section = String::new();
    let mut keys = std::collections::BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_ascii_lowercase();
            continue;
        }
        if section != "backend" {
            continue;
        }
        let Some((k, v)) = line.split_once(['=', ':']) else { continue };
        let v = v.trim();
        if !v.is_empty() {
            keys.insert(k.trim().to_ascii_lowercase(), v.to_string());
        }
    }
    let get = |k: &str| keys.get(k).cloned();
    if let (Some(ak), Some(sk)) = (get("ak"), get("sk")) {
        return Ok(Profile {
            kind: Kind::Cloud,
            server: get("server"),
            access_key: Some(ak),
            secret_key: Some(sk),
            ..Profile::embedded()
        });
    }
    match (get("server"), get("access_code")) {
        (Some(server), Some(code)) => Ok(Profile {
            kind: Kind::Enterprise,
            server: Some(server_address(&server)),
            access_code: Some(code),
            ..Profile::embedded()
        }),
        (server, code) => {
            let missing: Vec<&str> = [("server", server.is_none()), ("access_code", code.is_none())]
                .iter()
                .filter(|(_, m)| *m)
                .map(|(k, _)| *k)
                .collect();
            Err(Error::config(format!(
                "no usable [backend] section: it needs server and access_code (TapData Enterprise or Community), \
                 or ak and sk (TapData Cloud); missing: {}",
                missing.join(", ")
            )))
        }
    }
}

/// `tapdata.conf.backendUrl` and `tapdata.cloud.accessCode`, as TapFlow reads them (the URL's
/// scheme and `/api/` dropped).
pub fn parse_application_yml(text: &str) -> Result<Profile> {
    let url = yaml_scalar(text, &["tapdata", "conf", "backendUrl"]).unwrap_or_default();
    let code = yaml_scalar(text, &["tapdata", "cloud", "accessCode"]).unwrap_or_default();
    if url.is_empty() || code.is_empty() {
        return Err(Error::config(
            "application.yml needs tapdata.conf.backendUrl and tapdata.cloud.accessCode (a TapData agent's work dir has them)",
        ));
    }
    Ok(Profile {
        kind: Kind::Enterprise,
        server: Some(server_address(&url)),
        access_code: Some(code),
        ..Profile::embedded()
    })
}

/// `http://host:3030/api/` → `host:3030` (TapFlow's rewrite); a comma-separated list keeps its
/// first address.
fn server_address(url: &str) -> String {
    let first = url.split(',').next().unwrap_or(url).trim();
    let bare = first.trim_start_matches("http://").trim_start_matches("https://");
    let bare = bare.strip_suffix("/api/").or_else(|| bare.strip_suffix("/api")).unwrap_or(bare);
    bare.trim_end_matches('/').to_string()
}

/// The scalar at a path of nested block mappings (enough YAML for application.yml: `key: value`
/// lines, nesting by indentation, `#` comments, quoted values).
fn yaml_scalar(text: &str, path: &[&str]) -> Option<String> {
    let mut stack: Vec<(usize, String)> = Vec::new();
    for raw in text.lines() {
        let line = raw.split(" #").next().unwrap_or(raw);
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let Some((key, value)) = line.trim().split_once(':') else { continue };
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        stack.push((indent, key.trim().to_string()));
        let at: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
        let value = value.trim().trim_matches('"').trim_matches('\'');
        if at == path && !value.is_empty() {
            return Some(value.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tapflows_ini_as_its_writer_writes_it() {
        let enterprise = "[backend]\n; If you are using Tapdata Cloud, please provide the access key and secret key(ak & sk).\n; ak = \n; sk = \n\n; If you are using TapData Enterprise, please specify the server URL & access token.\nserver = 127.0.0.1:18080\naccess_code = 3324cfdf-7d3e-4792-bd32-571638d4562f\n";
        let p = parse_ini(enterprise).expect("enterprise");
        assert_eq!((p.kind, p.server.as_deref()), (Kind::Enterprise, Some("127.0.0.1:18080")));
        assert_eq!(p.access_code.as_deref(), Some("3324cfdf-7d3e-4792-bd32-571638d4562f"));
        let cloud = parse_ini("[BACKEND]\nAK = a1\nsk = s1\n; server = \n").expect("cloud");
        assert_eq!((cloud.kind, cloud.access_key.as_deref(), cloud.server), (Kind::Cloud, Some("a1"), None));
        let err = parse_ini("[backend]\nserver = h:1\n").expect_err("no code");
        assert!(err.message.contains("missing: access_code"), "{}", err.message);
    }

    #[test]
    fn application_yml_of_an_agent_work_dir() {
        let yml = "spring:\n  profiles: x\ntapdata:\n  cloud:\n    accessCode: \"c0de\"\n  conf:\n    backendUrl: 'http://10.0.0.5:3030/api/'  # the manager\n    tapdataPort: 8080\n";
        let p = parse_application_yml(yml).expect("parsed");
        assert_eq!(p.server.as_deref(), Some("10.0.0.5:3030"));
        assert_eq!(p.access_code.as_deref(), Some("c0de"));
        assert!(parse_application_yml("tapdata:\n  conf:\n    backendUrl: \n").is_err());
    }
}
