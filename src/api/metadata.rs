//! TapData's `MetadataInstances` document of a table: the engine builds it from a schema
//! ([`metadata_doc`]); the client reads it as a [`MetadataInstance`].

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value, json};

/// A table's metadata as the client reads it (from a cluster or the engine).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MetadataInstance {
    #[serde(default, deserialize_with = "or_default")]
    pub id: String,
    /// The table's name in its database.
    #[serde(default, deserialize_with = "or_default")]
    pub original_name: String,
    /// `table`, `collection`, `view` or `database`.
    #[serde(default, deserialize_with = "or_default")]
    pub meta_type: String,
    #[serde(default, deserialize_with = "or_default")]
    pub fields: Vec<MetadataField>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A field of a table's metadata.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MetadataField {
    #[serde(default, deserialize_with = "or_default")]
    pub field_name: String,
    /// The database's own type name.
    #[serde(default, deserialize_with = "or_default")]
    pub data_type: String,
    #[serde(rename = "primaryKey", default, deserialize_with = "or_default")]
    pub primary_key: bool,
    #[serde(default, deserialize_with = "or_default")]
    pub unique: bool,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl MetadataInstance {
    /// The primary-key fields, in the table's order.
    pub fn primary_key(&self) -> Vec<String> {
        self.fields.iter().filter(|f| f.primary_key).map(|f| f.field_name.clone()).collect()
    }
}

/// A field a server may send as null: its default.
fn or_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A `MetadataInstances` document for a table.
pub fn metadata_doc(conn_id: &str, conn_name: &str, database_type: &str, schema: &crate::model::Schema) -> Value {
    let mut pk_pos = 0;
    let fields: Vec<Value> = schema
        .fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if f.primary_key {
                pk_pos += 1;
            }
            json!({
                "id": format!("{conn_id}_{}_{}", schema.table, f.name),
                "field_name": f.name, "original_field_name": f.name, "data_type": f.data_type,
                "tapType": {"type": f.ty.tap_type()}, "type": f.ty,
                "primaryKey": f.primary_key, "primary_key_position": if f.primary_key { pk_pos } else { 0 },
                "unique": f.primary_key, "is_nullable": f.nullable, "columnPosition": i + 1,
            })
        })
        .collect();
    // Stable id per (connection, table), so reloading a schema keeps table ids.
    let id = format!("{:x}", md5_like(&format!("{conn_id}/{}", schema.table)));
    json!({
        "id": format!("{:0>24}", &id[..id.len().min(24)]),
        "name": schema.table, "original_name": schema.table,
        "qualified_name": format!("T_{}_{}_{}", database_type.to_lowercase(), schema.table, conn_id),
        "meta_type": "table", "sourceType": "SOURCE", "is_deleted": false,
        "source": {"id": conn_id, "_id": conn_id, "name": conn_name, "database_type": database_type},
        "fields": fields, "indices": [],
    })
}

/// A 96-bit FNV-style hash, for stable document ids (not for security).
fn md5_like(s: &str) -> u128 {
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in s.bytes() {
        h ^= u128::from(b);
        h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    h & ((1u128 << 96) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Field, FieldType, Schema};

    #[test]
    fn the_engines_document_reads_as_the_clients_type() {
        let f = |name: &str, pk| Field {
            name: name.into(),
            ty: FieldType::Integer,
            data_type: "INTEGER".into(),
            primary_key: pk,
            nullable: !pk,
        };
        let schema = Schema { table: "orders".into(), fields: vec![f("id", true), f("n", false)] };
        let doc = metadata_doc("c1", "Lite", "SQLite", &schema);
        let m: MetadataInstance = serde_json::from_value(doc.clone()).unwrap_or_default();
        assert_eq!((m.original_name.as_str(), m.meta_type.as_str()), ("orders", "table"));
        assert_eq!(m.id, doc["id"].as_str().unwrap_or("?"));
        assert_eq!(m.primary_key(), vec!["id"]);
        assert_eq!(m.fields[1].data_type, "INTEGER");
        // A cluster's document with nulls where tap reads values.
        let theirs = json!({"id": "x", "original_name": "t", "meta_type": "table",
                            "fields": [{"field_name": "a", "primaryKey": null, "unique": null, "data_type": null}]});
        let m: MetadataInstance = serde_json::from_value(theirs).unwrap_or_default();
        assert_eq!((m.fields.len(), m.fields[0].primary_key), (1, false));
    }
}
