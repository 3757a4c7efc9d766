//! Lookups: wide documents built from a main table and the tables looked up into it
//! (`merge_table_processor`), kept correct whatever changes, in whatever order.
//!
//! The engine keeps a local copy of every table of the lookup (one SQLite file per flow in the
//! data dir, `lookup/<flow>.db`), indexed by the fields rows are joined on. A change to any table
//! updates its copy, then finds the main rows whose documents it touches (walking the joins up
//! from the changed row, with both its old and new image, so a changed join key moves the row
//! to its new parent) and rebuilds those documents from the copies. A document is therefore
//! always a function of the copies' current state: the result does not depend on the order the
//! changes arrive in, a replay after a crash is harmless, and a main row that is gone deletes its
//! document.
//!
//! ```text
//!   ecom_orders ──────────────────────────────► document (order)
//!     ├─ customer_info   object  ← ecom_customers.customer_id = customer_id
//!     ├─ order_payments  array   ← ecom_order_payments.order_id = order_id
//!     └─ order_items     array   ← ecom_order_items.order_id = order_id
//!          ├─ product    object  ← ecom_products.product_id = order_items.product_id
//!          └─ seller     object  ← ecom_sellers.seller_id = order_items.seller_id
//! ```
//!
//! Nested values reach the target as objects and arrays: MongoDB stores them as they are,
//! SQLite as JSON text and PostgreSQL as JSONB columns.

use crate::api::dag::MergeProperty;
use crate::error::{Error, Result};
use crate::model::{Record, Value};
use rusqlite::{Connection, params_from_iter};
use serde_json::Value as Json;
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// One table of the lookup tree.
#[derive(Debug, Clone)]
pub struct Node {
    /// The DAG node id of the table's source.
    pub source_id: String,
    pub table: String,
    /// Where the rows go in the parent, relative to the parent (`""` merges into the parent).
    pub path: String,
    pub array: bool,
    pub array_keys: Vec<String>,
    /// (field of this table, field of the parent row).
    pub join: Vec<(String, String)>,
    pub parent: Option<usize>,
    pub children: Vec<usize>,
    /// This table's primary key (identifies a row in the copy).
    pub key: Vec<String>,
}

/// The lookup tree of a merge node: node 0 is the main table.
#[derive(Debug, Clone)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Check that every relation names fields its tables have: `fields[i]` are node `i`'s
    /// table's fields after its processors (`None`: not known before it runs).
    pub fn check_fields(&self, fields: &[Option<Vec<String>>]) -> Result<()> {
        for (i, n) in self.nodes.iter().enumerate().skip(1) {
            let parent = n.parent.unwrap_or(0);
            let (own, theirs) = (fields.get(i).cloned().flatten(), fields.get(parent).cloned().flatten());
            let missing =
                |have: &Option<Vec<String>>, field: &str| have.as_ref().is_some_and(|h| !h.iter().any(|f| f == field));
            let listed = |have: &Option<Vec<String>>| have.as_ref().map(|h| h.join(", ")).unwrap_or_default();
            let target = if n.path.is_empty() { "the parent document".to_string() } else { format!("{:?}", n.path) };
            for (mine, parents) in &n.join {
                if missing(&own, mine) {
                    return Err(Error::schema(format!(
                        "the lookup of {} into {target} joins on {mine:?}, which {} does not have (it has: {}); \
                         fix the relation: its keys are fields of {}",
                        n.table,
                        n.table,
                        listed(&own),
                        n.table
                    )));
                }
                if missing(&theirs, parents) {
                    let p = &self.nodes[parent].table;
                    return Err(Error::schema(format!(
                        "the lookup of {} into {target} joins {mine:?} to {parents:?}, which {p} does not have \
                         (it has: {}); fix the relation: its values are fields of {p}",
                        n.table,
                        listed(&theirs)
                    )));
                }
            }
            for k in &n.array_keys {
                if missing(&own, k) {
                    return Err(Error::schema(format!(
                        "the lookup of {} into {target} keys its array on {k:?}, which {} does not have (it has: {})",
                        n.table,
                        n.table,
                        listed(&own)
                    )));
                }
            }
        }
        Ok(())
    }

    /// The tree of a merge node's `mergeProperties`. `main_source` is the DAG node id of the
    /// main table's source (the head's `id` may name the last processor before the merge).
    pub fn from_merge(merge: &[MergeProperty], main_source: &str, main_table: &str) -> Result<Self> {
        let head =
            merge.first().ok_or_else(|| Error::config("the lookup (merge_table_processor) has no mergeProperties"))?;
        let mut nodes = vec![Node {
            source_id: main_source.to_string(),
            table: main_table.to_string(),
            path: String::new(),
            array: false,
            array_keys: Vec::new(),
            join: Vec::new(),
            parent: None,
            children: Vec::new(),
            key: Vec::new(),
        }];
        fn walk(nodes: &mut Vec<Node>, parent: usize, parent_abs: &str, children: &[MergeProperty]) -> Result<()> {
            for c in children {
                let abs = c.target_path.clone();
                let rel = match abs.strip_prefix(&format!("{parent_abs}.")) {
                    Some(r) if !parent_abs.is_empty() => r.to_string(),
                    _ => abs.clone(),
                };
                let strip = |f: &str| -> (String, bool) {
                    match f.strip_prefix(&format!("{parent_abs}.")) {
                        Some(r) if !parent_abs.is_empty() => (r.to_string(), true),
                        _ => (f.to_string(), false),
                    }
                };
                let mut join = Vec::new();
                for jk in &c.join_keys {
                    let ((s, s_parent), (t, _)) = (strip(&jk.source), strip(&jk.target));
                    // The side under the parent's path is the parent's field, whichever way round it came.
                    join.push(if s_parent { (t, s) } else { (s, t) });
                }
                if join.is_empty() {
                    let table = if c.table_name.is_empty() { "?" } else { &c.table_name };
                    return Err(Error::config(format!("the lookup of {table} has no join keys (relation)")));
                }
                let idx = nodes.len();
                nodes.push(Node {
                    source_id: c.id.clone(),
                    table: c.table_name.clone(),
                    path: rel,
                    array: c.merge_type == "updateIntoArray",
                    array_keys: c.array_keys.clone(),
                    join,
                    parent: Some(parent),
                    children: Vec::new(),
                    key: Vec::new(),
                });
                nodes[parent].children.push(idx);
                walk(nodes, idx, &abs, &c.children)?;
            }
            Ok(())
        }
        walk(&mut nodes, 0, "", &head.children)?;
        Ok(Tree { nodes })
    }
}

/// The local copies and the document builder.
pub struct Lookup {
    pub tree: Tree,
    db: Connection,
    /// Embedded objects already built, by (node, join values). Many documents embed the same
    /// product, seller or customer; any write to the copies clears it, so it only ever serves
    /// a build phase (the initial build, or the documents of one CDC batch). Bounded.
    objects: RefCell<HashMap<(usize, String), Option<Record>>>,
    /// Each node's statements, built once.
    sql: Vec<NodeSql>,
}

struct NodeSql {
    put: String,
    remove: String,
    get: String,
    /// This node's rows by its own join fields (the values come from a parent row).
    find: String,
    /// The parent rows this node's row joins to: the main table's key text, or the parent's own
    /// join fields (to walk further up).
    up: String,
}

/// Entries of the embedded-object cache before it is cleared.
const OBJECT_CACHE_MAX: usize = 50_000;

fn key_text(row: &Record, key: &[String]) -> String {
    let vals: Vec<&Value> = key.iter().map(|k| row.get(k).unwrap_or(&Value::Null)).collect();
    serde_json::to_string(&vals).unwrap_or_default()
}

/// A value as `json_extract` reads it from a stored row: JSON's own types as themselves, the
/// others as the text of their stored (tagged) form.
fn sql_value(v: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as S;
    match v {
        Value::Null => S::Null,
        Value::Bool(b) => S::Integer(i64::from(*b)),
        Value::Int(i) => S::Integer(*i),
        Value::Float(f) => S::Real(*f),
        Value::Text(s) => S::Text(s.clone()),
        other => S::Text(serde_json::to_string(other).unwrap_or_default()),
    }
}

/// `json_extract(row, f1) = ?1 AND …`, matching the copies' expression indexes.
fn where_clause(fields: &[&String]) -> String {
    fields
        .iter()
        .enumerate()
        .map(|(j, f)| format!("json_extract(row, {}) = ?{}", json_path(f), j + 1))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// A field read back from a copy with `row -> path` (its stored JSON text; NULL when absent).
fn stored_value(v: rusqlite::types::ValueRef<'_>) -> Value {
    match v {
        rusqlite::types::ValueRef::Text(t) => {
            serde_json::from_slice::<Json>(t).map(Value::from_tagged).unwrap_or(Value::Null)
        }
        _ => Value::Null,
    }
}

fn json_path(field: &str) -> String {
    format!("'$.\"{}\"'", field.replace('\'', "''").replace('"', "\\\""))
}

impl Lookup {
    /// Open (or create) the copies for flow `flow_id` under `dir`.
    pub fn open(dir: &Path, flow_id: &str, tree: Tree) -> Result<Self> {
        if !super::safe_id(flow_id) {
            return Err(Error::internal(format!("flow id {flow_id:?} cannot name a file")));
        }
        super::create_dir_private(dir)?;
        let path = dir.join(format!("{flow_id}.db"));
        super::create_private(&path)?;
        let db = Connection::open(&path)?;
        // A page cache big enough for the copies' hot pages (bounded: 64 MiB), and reads
        // through a memory map rather than a read() per page.
        db.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-65536; \
             PRAGMA mmap_size=1073741824; PRAGMA temp_store=MEMORY;",
        )?;
        db.set_prepared_statement_cache_capacity(64);
        for (i, n) in tree.nodes.iter().enumerate() {
            db.execute_batch(&format!("CREATE TABLE IF NOT EXISTS n{i} (k TEXT PRIMARY KEY, row TEXT NOT NULL)"))?;
            // Rows of this node are found by its own join fields (from the parent), and parents
            // by the fields their children join on.
            let mut fields: Vec<&String> = n.join.iter().map(|(own, _)| own).collect();
            for c in &n.children {
                fields.extend(tree.nodes[*c].join.iter().map(|(_, parent_field)| parent_field));
            }
            for (j, f) in fields.iter().enumerate() {
                db.execute_batch(&format!(
                    "CREATE INDEX IF NOT EXISTS n{i}_j{j} ON n{i} (json_extract(row, {}))",
                    json_path(f)
                ))?;
            }
        }
        let sql = tree
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let own: Vec<&String> = n.join.iter().map(|(own, _)| own).collect();
                let up = match n.parent {
                    None => String::new(),
                    Some(p) => {
                        let parent = &tree.nodes[p];
                        let cols = if parent.parent.is_none() {
                            "k".to_string()
                        } else {
                            let fields = parent.join.iter().map(|(f, _)| format!("row -> {}", json_path(f)));
                            fields.collect::<Vec<_>>().join(", ")
                        };
                        let parent_fields: Vec<&String> = n.join.iter().map(|(_, pf)| pf).collect();
                        format!("SELECT {cols} FROM n{p} WHERE {}", where_clause(&parent_fields))
                    }
                };
                NodeSql {
                    put: format!("INSERT OR REPLACE INTO n{i} (k, row) VALUES (?1, ?2)"),
                    remove: format!("DELETE FROM n{i} WHERE k = ?1"),
                    get: format!("SELECT row FROM n{i} WHERE k = ?1"),
                    find: format!("SELECT row FROM n{i} WHERE {}", where_clause(&own)),
                    up,
                }
            })
            .collect();
        Ok(Self { tree, db, objects: RefCell::new(HashMap::new()), sql })
    }

    pub fn remove_files(dir: &Path, flow_id: &str) {
        if !super::safe_id(flow_id) {
            return;
        }
        for suffix in ["db", "db-wal", "db-shm"] {
            let _ = std::fs::remove_file(dir.join(format!("{flow_id}.{suffix}")));
        }
    }

    pub fn begin(&self) -> Result<()> {
        self.db.execute_batch("BEGIN")?;
        Ok(())
    }

    pub fn commit(&self) -> Result<()> {
        self.db.execute_batch("COMMIT")?;
        Ok(())
    }

    /// Store (or replace) a row of node `i`.
    pub fn put(&self, i: usize, row: &Record) -> Result<()> {
        self.forget_objects();
        let key = key_text(row, &self.tree.nodes[i].key);
        let mut st = self.db.prepare_cached(&self.sql[i].put)?;
        st.execute(rusqlite::params![key, serde_json::to_string(row)?])?;
        Ok(())
    }

    pub fn remove(&self, i: usize, row: &Record) -> Result<()> {
        self.forget_objects();
        let key = key_text(row, &self.tree.nodes[i].key);
        let mut st = self.db.prepare_cached(&self.sql[i].remove)?;
        st.execute([key])?;
        Ok(())
    }

    /// Rows of node `i` whose `fields` equal `values`.
    fn find(&self, i: usize, values: &[&Value]) -> Result<Vec<Record>> {
        if values.iter().any(|v| v.is_null()) {
            return Ok(Vec::new());
        }
        let mut st = self.db.prepare_cached(&self.sql[i].find)?;
        let rows = st.query_map(params_from_iter(values.iter().map(|v| sql_value(v))), |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(serde_json::from_str(&r?)?);
        }
        Ok(out)
    }

    /// The old row of a change to node `i`, to walk up to the documents it leaves: the event's
    /// before image when it holds the fields the walk needs (a full image), else the copy's row
    /// with its key (a before image that carries the key only: MongoDB, PostgreSQL with
    /// REPLICA IDENTITY DEFAULT).
    pub fn old_row<'a>(&self, i: usize, before: &'a Record) -> Result<Cow<'a, Record>> {
        let node = &self.tree.nodes[i];
        if node.join.iter().all(|(own, _)| before.contains_key(own)) {
            return Ok(Cow::Borrowed(before));
        }
        Ok(self.row_by_key(i, &key_text(before, &node.key))?.map(Cow::Owned).unwrap_or(Cow::Borrowed(before)))
    }

    /// The main row with the given main key values, if present.
    pub fn main_row(&self, key_text_value: &str) -> Result<Option<Record>> {
        self.row_by_key(0, key_text_value)
    }

    fn row_by_key(&self, i: usize, key: &str) -> Result<Option<Record>> {
        let mut st = self.db.prepare_cached(&self.sql[i].get)?;
        let mut rows = st.query([key])?;
        match rows.next()? {
            Some(r) => Ok(Some(serde_json::from_str(&r.get::<_, String>(0)?)?)),
            None => Ok(None),
        }
    }

    /// The main-table keys (as key text) whose documents a row of node `i` touches.
    pub fn roots(&self, i: usize, row: &Record, out: &mut BTreeSet<String>) -> Result<()> {
        let node = &self.tree.nodes[i];
        let Some(p) = node.parent else {
            out.insert(key_text(row, &node.key));
            return Ok(());
        };
        let values: Vec<&Value> = node.join.iter().map(|(own, _)| row.get(own).unwrap_or(&Value::Null)).collect();
        if values.iter().any(|v| v.is_null()) {
            return Ok(());
        }
        // Read only what the walk needs: the main table's key text, or the parent's own join
        // fields to go one level further up (not whole rows, parsed).
        let parent = &self.tree.nodes[p];
        let up: Vec<&String> = parent.join.iter().map(|(own, _)| own).collect();
        let mut st = self.db.prepare_cached(&self.sql[i].up)?;
        let mut rows = st.query(params_from_iter(values.iter().map(|v| sql_value(v))))?;
        let mut found: Vec<Record> = Vec::new();
        while let Some(r) = rows.next()? {
            if parent.parent.is_none() {
                out.insert(r.get::<_, String>(0)?);
            } else {
                let mut partial = Record::with_capacity(up.len());
                for (j, f) in up.iter().enumerate() {
                    partial.insert((*f).clone(), stored_value(r.get_ref(j)?));
                }
                found.push(partial);
            }
        }
        for partial in found {
            self.roots(p, &partial, out)?;
        }
        Ok(())
    }

    /// Build the document of a row of node `i` (the main table for the whole document). The
    /// row becomes the document: nothing of it is copied.
    pub fn build(&self, i: usize, row: Record) -> Result<Record> {
        let children = &self.tree.nodes[i].children;
        // Every child joins on the row as it came, before any child is merged into it.
        let joins: Vec<Vec<Value>> = children
            .iter()
            .map(|&c| {
                let join = &self.tree.nodes[c].join;
                join.iter().map(|(_, pf)| row.get(pf).cloned().unwrap_or(Value::Null)).collect()
            })
            .collect();
        let mut doc = row;
        for (&c, values) in children.iter().zip(joins) {
            let child = &self.tree.nodes[c];
            let values: Vec<&Value> = values.iter().collect();
            if child.array {
                let mut rows = self.find(c, &values)?;
                let order = if child.array_keys.is_empty() { &child.key } else { &child.array_keys };
                rows.sort_by(|a, b| compare_keys(a, b, order));
                let items =
                    rows.into_iter().map(|r| self.build(c, r).map(Value::Object)).collect::<Result<Vec<_>>>()?;
                set(&mut doc, &child.path, Some(Value::Array(items)));
            } else {
                let cache_key = (c, serde_json::to_string(&values)?);
                let cached = self.objects.borrow().get(&cache_key).cloned();
                let embedded = match cached {
                    Some(e) => e,
                    None => {
                        let mut rows = self.find(c, &values)?;
                        rows.sort_by(|a, b| compare_keys(a, b, &child.key));
                        let e = rows.into_iter().next().map(|r| self.build(c, r)).transpose()?;
                        let mut cache = self.objects.borrow_mut();
                        if cache.len() >= OBJECT_CACHE_MAX {
                            cache.clear();
                        }
                        cache.insert(cache_key, e.clone());
                        e
                    }
                };
                if child.path.is_empty() {
                    for (k, v) in embedded.into_iter().flatten() {
                        doc.entry(k).or_insert(v);
                    }
                } else {
                    // No match is an explicit null, so an upsert clears what was embedded before.
                    set(&mut doc, &child.path, Some(embedded.map(Value::Object).unwrap_or(Value::Null)));
                }
            }
        }
        Ok(doc)
    }

    /// Whether an update of node `i` from `old` to `new` can leave documents or move in the
    /// copy: `(walk_old, key_moved)`. The documents a row touches follow from its own join
    /// fields (its key, for the main table) and the copies of the tables above it, which the
    /// update does not change; so an update that keeps those fields touches the documents its
    /// new image does, and one that keeps its key replaces its row in place.
    pub fn update_moves(&self, i: usize, old: &Record, new: &Record) -> (bool, bool) {
        let node = &self.tree.nodes[i];
        let same = |f: &String| old.get(f) == new.get(f);
        let key_same = node.key.iter().all(same);
        let joins_same = if node.parent.is_none() { key_same } else { node.join.iter().all(|(own, _)| same(own)) };
        (!joins_same, !key_same)
    }

    fn forget_objects(&self) {
        let mut cache = self.objects.borrow_mut();
        if !cache.is_empty() {
            cache.clear();
        }
    }

    /// Every main row, in key order, `batch` at a time.
    pub fn main_rows(&self, after: Option<&str>, batch: usize) -> Result<Vec<(String, Record)>> {
        let mut st = self.db.prepare_cached("SELECT k, row FROM n0 WHERE k > ?1 ORDER BY k LIMIT ?2")?;
        let rows = st.query_map(rusqlite::params![after.unwrap_or(""), batch as i64], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (k, row) = r?;
            out.push((k, serde_json::from_str(&row)?));
        }
        Ok(out)
    }

    /// A record holding only the main key, for deleting a document.
    pub fn key_record(&self, key_text_value: &str) -> Record {
        let vals: Vec<Value> = serde_json::from_str(key_text_value).unwrap_or_default();
        self.tree.nodes[0].key.iter().cloned().zip(vals).collect()
    }
}

fn compare_keys(a: &Record, b: &Record, keys: &[String]) -> std::cmp::Ordering {
    for k in keys {
        let (x, y) = (a.get(k).unwrap_or(&Value::Null), b.get(k).unwrap_or(&Value::Null));
        // Numbers by value, the rest by their text (dates and timestamps sort as their text).
        let o = match (x.as_f64(), y.as_f64()) {
            (Some(p), Some(q)) => p.partial_cmp(&q).unwrap_or(std::cmp::Ordering::Equal),
            _ => x.text().cmp(&y.text()),
        };
        if o != std::cmp::Ordering::Equal {
            return o;
        }
    }
    std::cmp::Ordering::Equal
}

/// Set (or, with `None`, remove) the value at a dotted path, creating objects on the way.
fn set(doc: &mut Record, path: &str, value: Option<Value>) {
    let mut parts = path.split('.').peekable();
    let mut cur = doc;
    while let Some(p) = parts.next() {
        if parts.peek().is_none() {
            match value {
                Some(v) => {
                    cur.insert(p.to_string(), v);
                }
                None => {
                    cur.remove(p);
                }
            }
            return;
        }
        let entry = cur.entry(p.to_string()).or_insert_with(|| Value::Object(Record::new()));
        if !matches!(entry, Value::Object(_)) {
            *entry = Value::Object(Record::new());
        }
        match entry {
            Value::Object(m) => cur = m,
            _ => return,
        }
    }
}
