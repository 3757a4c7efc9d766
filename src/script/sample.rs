//! `demo()`: the seed's sample tables, made by the embedded engine, or in a local file when the
//! session talks to a cluster; `demo_into` fills a saved connection.

use super::*;

pub(super) fn demo_rows(rows: i64) -> Result<usize> {
    bounded("demo's number of orders", rows, 1, MAX_DEMO_ROWS).map(|r| r as usize)
}

/// Create the sample database for the session: a SQLite file in the engine's data dir (made
/// by the engine, which refuses to replace tables its flows use unless `force`), or in the
/// current directory when the session talks to a cluster.
pub fn demo(session: &Session, rows: usize, force: bool) -> Result<String> {
    if session.is_embedded() {
        let body = json!({"className": "TapDemoService", "method": "generate", "args": [Value::Null, rows, force]});
        let data = session.client.post("/proxy/call", &body)?;
        let path = data.get("path").and_then(Value::as_str).unwrap_or_default().to_string();
        session.out.text(&format!("sample data in {path}: {}", demo_summary(&data)));
        return Ok(path);
    }
    let path = std::env::current_dir()?.join("demo.sqlite");
    let path_text = path.to_string_lossy().into_owned();
    let made = crate::local::demo_file(&path_text, rows)?;
    let summary: Vec<String> = made.iter().map(|(t, n)| format!("{t} {n}")).collect();
    session.out.text(&format!("sample data in {path_text}: {}", summary.join(", ")));
    Ok(path_text)
}

/// `table rows, …` of a TapDemoService answer.
pub(super) fn demo_summary(data: &Value) -> String {
    let tables: Vec<String> = data
        .get("tables")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|t| format!("{} {}", t[0].as_str().unwrap_or(""), t[1])).collect())
        .unwrap_or_default();
    tables.join(", ")
}

/// Fill a saved connection with the sample tables, through the embedded engine.
pub fn demo_into(session: &Session, conn: &str, rows: usize, force: bool) -> Result<()> {
    let id = resolve::connection(session, conn)?.id;
    let body = json!({"className": "TapDemoService", "method": "generate", "args": [id, rows, force]});
    let data = session.client.post("/proxy/call", &body).map_err(|e| {
        if e.kind == crate::error::ErrorKind::Unsupported {
            Error::unsupported("demo into a connection works with the embedded engine only")
        } else {
            e.context(format!("demo into {conn}"))
        }
    })?;
    datasource::wait_loaded(session, &id, Duration::from_secs(120))?;
    session.out.either(&format!("sample data in {conn}: {}", demo_summary(&data)), &data);
    Ok(())
}
