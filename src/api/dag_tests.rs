//! The rules of `dag.rs`, walked.

use super::*;
use serde_json::json;

fn rules_of(ty: &str) -> Option<&'static NodeRules> {
    NODE_TYPES.iter().find(|(t, _)| *t == ty).map(|(_, r)| r)
}

/// Every node type and field the official client emits (`reference/tapflow-client.md`
/// §8.3–8.7) is handled, refused, or listed as inert: none falls through.
#[test]
fn every_field_the_official_client_emits_has_a_rule() {
    let emitted: &[(&str, &[&str])] = &[
        (
            "table",
            &[
                "tableNames",
                "dmlPolicy",
                "nodeConfig",
                "isFilter",
                "attrs",
                "connectionId",
                "databaseType",
                "disabledEvents",
                "id",
                "increaseReadSize",
                "name",
                "tableName",
                "type",
                "node_config",
                "enableDDL",
                "ddlConfiguration",
                "writeStrategy",
                "initialConcurrent",
                "initialConcurrentWriteNum",
                "cdcConcurrent",
                "cdcConcurrentWriteNum",
                "updateConditionFields",
                "existDataProcessMode",
                "customCommand",
                "enableCustomCommand",
                "conditions",
                "readBatchSize",
                "writeBatchSize",
                "writeBatchWaitMs",
            ],
        ),
        ("js_processor", &["attrs", "name", "type", "script", "declareScript", "id"]),
        (
            "row_filter_processor",
            &[
                "action",
                "expression",
                "concurrentNum",
                "type",
                "catalog",
                "isTransformed",
                "name",
                "elementType",
                "disabled",
                "id",
            ],
        ),
        ("field_rename_processor", &["operations", "catalog", "elementType", "name", "type", "id"]),
        (
            "merge_table_processor",
            &[
                "type",
                "processorThreadNum",
                "name",
                "mergeProperties",
                "id",
                "elementType",
                "mergeMode",
                "disable",
                "isTransformed",
                "catalog",
                "attrs",
            ],
        ),
        (
            "union_processor",
            &["catalog", "elementType", "name", "type", "concurrentNum", "enableConcurrentProcess", "id"],
        ),
        ("table_rename_processor", &["catalog", "elementType", "name", "prefix", "suffix", "type", "tableNames", "id"]),
    ];
    for (ty, fields) in emitted {
        let Some(NodeRules::Runs(rules)) = rules_of(ty) else { panic!("{ty} has no rules") };
        for f in *fields {
            assert!(
                COMMON.iter().chain(DATA_NODE).chain(rules.iter()).any(|(k, _)| k == f),
                "field {f} of {ty} is neither handled, refused nor inert"
            );
        }
    }
    for f in [
        "syncIndex",
        "enableSaveDeleteData",
        "shardCollection",
        "hashSplit",
        "maxSplit",
        "preImage",
        "enableFillingModifiedData",
        "skipDeletedEventsOnFilling",
        "batchReadThreadSize",
    ] {
        assert!(NODE_CONFIG.iter().any(|(k, _)| *k == f), "nodeConfig.{f} has no rule");
    }
    for f in [
        "id",
        "isArray",
        "joinKeys",
        "mergeType",
        "targetPath",
        "arrayKeys",
        "children",
        "tableName",
        "enableUpdateJoinKeyValue",
    ] {
        assert!(MERGE_PROPERTY.iter().any(|(k, _)| *k == f), "mergeProperties.{f} has no rule");
    }
    assert!(matches!(rules_of("database"), Some(NodeRules::Runs(_))), "whole databases run");
    assert!(matches!(rules_of("python_processor"), Some(NodeRules::Runs(_))), "Python functions run");
    // The official client's node shapes (§8.4) of the type and time processors are run.
    for (ty, fields) in [
        ("add_date_field_processor", &["dateFieldName"][..]),
        ("date_processor", &["add", "dataTypes", "hours"][..]),
        ("field_mod_type_filter_processor", &["filterTypes"][..]),
        ("field_mod_type_processor", &["operations"][..]),
        (
            "unwind_processor",
            &["arrayModel", "includeArrayIndex", "joiner", "path", "preserveNullAndEmptyArrays", "unwindModel"][..],
        ),
    ] {
        let Some(NodeRules::Runs(rules)) = rules_of(ty) else { panic!("{ty} should run") };
        for f in fields {
            assert!(rules.iter().any(|(k, _)| k == f), "{ty}.{f} has no rule");
        }
    }
    // The data-affecting task settings the official client can send (§8.7).
    for f in [
        "type",
        "syncType",
        "syncPoints",
        "skipErrorEvent",
        "isStopOnError",
        "doubleActive",
        "shareCdcEnable",
        "shareCache",
        "isFilter",
        "isOpenAutoDDL",
        "planStartDateFlag",
        "isSchedule",
        "crontabExpressionFlag",
        "crontabExpression",
        "increHysteresis",
        "increOperationMode",
        "autoInspect",
    ] {
        assert!(TASK_SETTINGS.iter().any(|(k, _)| *k == f), "task setting {f} has no rule");
    }
}

fn task(nodes: Value) -> Value {
    json!({"name": "f", "dag": {"nodes": nodes, "edges": []}})
}

fn refusal(t: Value) -> String {
    Dag::parse(&t).err().map(|r| r.message).unwrap_or_default()
}

#[test]
fn data_fields_the_engine_does_not_do_are_refused_by_name() {
    let src = |extra: Value| {
        let mut n = json!({"id": "a", "type": "table", "name": "orders", "connectionId": "c", "tableName": "orders"});
        if let (Some(n), Some(e)) = (n.as_object_mut(), extra.as_object()) {
            n.extend(e.clone());
        }
        task(json!([n]))
    };
    assert!(Dag::parse(&src(json!({}))).is_ok());
    // A source's query and filter are read (the plan checks their contents); their shapes here.
    assert!(
        Dag::parse(&src(json!({"enableCustomCommand": true,
        "customCommand": {"command": "executeQuery", "params": {"sql": "SELECT 1"}}})))
        .is_ok()
    );
    assert!(
        Dag::parse(&src(json!({"isFilter": true, "conditions": [{"key": "a", "operator": 5, "value": "1"}]}))).is_ok()
    );
    let m = refusal(src(json!({"customCommand": "SELECT 1"})));
    assert!(m.contains("node \"orders\" (table)") && m.contains("customCommand") && m.contains("an object"), "{m}");
    let m = refusal(src(json!({"conditions": "a > 1"})));
    assert!(m.contains("conditions") && m.contains("a list"), "{m}");
    assert!(refusal(src(json!({"writeStrategy": "insertOnly"}))).contains("writeStrategy"));
    assert!(refusal(src(json!({"nodeConfig": {"shardCollection": true}}))).contains("nodeConfig.shardCollection"));
    assert!(refusal(src(json!({"bogusField": 1}))).contains("bogusField"));
    // Defaults the official client always sends are accepted.
    assert!(
        Dag::parse(&src(
            json!({"dmlPolicy": {"insertPolicy": "update_on_exists", "updatePolicy": "ignore_on_nonexists"},
            "isFilter": false, "disabledEvents": [], "writeStrategy": "updateOrInsert", "enableCustomCommand": false})
        ))
        .is_ok()
    );
    let m = refusal(task(json!([{"id": "j", "type": "js_processor", "name": "JS", "script": 5}])));
    assert!(m.contains("node \"JS\" (js_processor): field script is 5, it must be a string"), "{m}");
    let m = refusal(task(json!([{"id": "u", "type": "unwind_processor", "name": "flat_unwind"}])));
    assert!(m.contains("flat_unwind") && m.contains("unwind"), "{m}");
    let m = refusal(task(json!([{"id": "u", "type": "bogus_processor"}])));
    assert!(m.contains("bogus_processor") && m.contains("table"), "{m}");
    let mut t = task(json!([]));
    t["type"] = json!("bogus");
    assert!(refusal(t).contains("field type is \"bogus\""));
    let mut t = task(json!([]));
    t["syncPoints"] = json!("2024-01-01");
    assert!(refusal(t).contains("syncPoints"));
    let merge = json!([{"id": "m", "type": "merge_table_processor", "mergeProperties": [{"id": "a", "tableName": "t",
        "children": [{"id": "b", "tableName": "u", "mergeType": "appendWrite"}]}]}]);
    assert!(refusal(task(merge)).contains("mergeProperties.children.mergeType"));
    // The lookup tree is read into its types at parse: a join key that is not a field name is
    // refused there, naming the node (it read as an empty name, then "no join keys").
    let merge = json!([{"id": "m", "type": "merge_table_processor", "name": "Lookup", "mergeProperties": [{"id": "a",
        "tableName": "t", "children": [{"id": "b", "tableName": "u", "joinKeys": [{"source": 5, "target": "x"}]}]}]}]);
    let m = refusal(task(merge));
    assert!(m.contains("node \"Lookup\" (merge_table_processor): mergeProperties") && m.contains("integer"), "{m}");
    let merge = json!([{"id": "m", "type": "merge_table_processor", "mergeProperties": [{"id": "a", "tableName": "t",
        "children": [{"id": "b", "tableName": "u", "targetPath": "u", "mergeType": "updateIntoArray",
        "arrayKeys": ["k"], "joinKeys": [{"source": "ref", "target": "id"}]}]}]}]);
    let dag = Dag::parse(&task(merge)).expect("a lookup tree");
    let props = dag.nodes[0].merge().unwrap_or_default();
    let child = &props[0].children[0];
    assert_eq!(
        (child.table_name.as_str(), child.merge_type.as_str(), &child.array_keys[..]),
        ("u", "updateIntoArray", &["k".to_string()][..])
    );
    assert_eq!((child.join_keys[0].source.as_str(), child.join_keys[0].target.as_str()), ("ref", "id"));
    let js = json!([{"id": "j", "type": "js_processor", "script": "", "declareScript": "TapModelDeclare.removeField(tapTable, 'x');\n"}]);
    assert!(refusal(task(js)).contains("declareScript"));
}

#[test]
fn a_stored_flow_names_its_tables_even_when_a_save_would_refuse_it_now() {
    // Reset and delete release what a flow holds in its sources: a DAG that today's rules
    // refuse (an unknown node, a field of another type) must still name them.
    let t = json!({"dag": {"nodes": [
        {"id": "a", "type": "table", "connectionId": "c1", "tableName": "orders", "updateConditionFields": null},
        {"id": "x", "type": "bogus_processor"},
        {"id": "b", "type": "table", "connectionId": "c2", "tableName": "wide"}],
        "edges": [{"source": "a", "target": "x"}, {"source": "x", "target": "b"}]}});
    assert!(Dag::parse(&t).is_err());
    let got: Vec<(String, String, bool)> =
        table_nodes(&t).into_iter().map(|(n, src)| (n.connection_id, n.table_name, src)).collect();
    assert_eq!(got, vec![("c1".into(), "orders".into(), true), ("c2".into(), "wide".into(), false)]);
}

#[test]
fn a_skip_setting_is_read_one_way_by_the_rules_and_the_plan() {
    assert_eq!(skip_setting(&json!(null)), Some(None));
    assert_eq!(skip_setting(&json!({"errorMode": "Disable", "limitMode": "SkipByLimit"})), Some(None));
    let n = json!({"errorMode": "SkipData", "limitMode": "SkipByLimit", "limit": 3});
    assert_eq!(skip_setting(&n), Some(Some(3)));
    // Only the enum spelling: still a limit, not a setting silently off.
    assert_eq!(
        skip_setting(&json!({"errorModeEnum": "SkipData", "limitModeEnum": "SkipByLimit", "limit": 2})),
        Some(Some(2))
    );
    assert_eq!(skip_setting(&json!({"errorMode": "SkipData", "limitMode": "SkipByRate", "limit": 2})), None);
    assert_eq!(skip_setting(&json!({"errorMode": "SkipData"})), None, "a skip without its limit");
}
