//! First-run cluster setup, asked as TapFlow asks it, plus E for the embedded engine.
//! Credentials are checked by logging in before anything is saved; secrets are never echoed.

use super::{File, Kind, Profile};
use crate::error::{Error, Result};
use crate::output::Output;

fn io_err(e: dialoguer::Error) -> Error {
    Error::usage(format!("setup cancelled: {e}"))
}

/// Ask for a profile; `check` logs in with it and says why it failed.
pub fn ask(out: &Output, check: &dyn Fn(&Profile) -> Result<()>) -> Result<Profile> {
    out.line("");
    out.line("--- Please configure TapData cluster ---");
    out.line("");
    out.line("tap runs flows on a TapData Live Data Platform cluster, or on the engine built into tap.");
    out.line("Type E to use the embedded engine on this machine (recommended: needs nothing else).");
    out.line("Type L for TapData Enterprise or TapData Community.");
    out.line("Type C for TapData Cloud.");
    loop {
        let answer: String = dialoguer::Input::new()
            .with_prompt("Please type E, L or C")
            .default("E".to_string())
            .interact_text()
            .map_err(io_err)?;
        let profile = match answer.trim().to_ascii_uppercase().as_str() {
            "E" | "" => Profile::embedded(),
            "L" => {
                let server: String = dialoguer::Input::new()
                    .with_prompt("Please enter server:port of TapData LDP server")
                    .interact_text()
                    .map_err(io_err)?;
                let code =
                    dialoguer::Password::new().with_prompt("Please enter access code").interact().map_err(io_err)?;
                Profile {
                    kind: Kind::Enterprise,
                    server: Some(server.trim().to_string()),
                    access_code: Some(code.trim().to_string()),
                    ..Profile::embedded()
                }
            }
            "C" => {
                out.line("You may obtain the keys by logging onto TapData Cloud and clicking 'User Center' on the top right.");
                let ak = dialoguer::Password::new().with_prompt("Enter AK").interact().map_err(io_err)?;
                let sk = dialoguer::Password::new().with_prompt("Enter SK").interact().map_err(io_err)?;
                Profile {
                    kind: Kind::Cloud,
                    access_key: Some(ak.trim().to_string()),
                    secret_key: Some(sk.trim().to_string()),
                    ..Profile::embedded()
                }
            }
            _ => {
                out.line("Invalid input, please try again");
                continue;
            }
        };
        match check(&profile) {
            Ok(()) => return Ok(profile),
            Err(e) => {
                out.warn(&format!("could not log in: {e}"));
                out.line("Please try again.");
            }
        }
    }
}

/// Save `profile` as `name` and make it the default.
pub fn save(name: &str, profile: Profile, make_default: bool) -> Result<()> {
    let mut file = File::load()?.unwrap_or_default();
    file.profiles.insert(name.to_string(), profile);
    if make_default || file.default.is_none() {
        file.default = Some(name.to_string());
    }
    file.save()
}
