//! The only writer to the terminal.

/// Replace the password in a URI (`mongodb://user:secret@host`) with `******`.
pub fn mask_uri(uri: &str) -> String {
    let Some(scheme_end) = uri.find("://") else { return uri.to_string() };
    let rest = &uri[scheme_end + 3..];
    let Some(at) = rest.find('@') else { return uri.to_string() };
    let creds = &rest[..at];
    match creds.split_once(':') {
        Some((user, _)) => format!("{}://{}:******@{}", &uri[..scheme_end], user, &rest[at + 1..]),
        None => uri.to_string(),
    }
}
