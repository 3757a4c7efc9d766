//! TapData's `MetadataInstances` document of a table, built from the engine's schema.

use serde_json::{Value, json};

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
