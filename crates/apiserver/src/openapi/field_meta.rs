//! How the fields of the built-in types merge: the facts k8s-openapi's schemas lack.
//!
//! Kubernetes declares them in its Go API types (struct tags `patchStrategy`/`patchMergeKey`,
//! markers `+listType`, `+listMapKey`, `+mapType`, `+structType`) and publishes them in its
//! OpenAPI documents as `x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`,
//! `x-kubernetes-list-type`, `x-kubernetes-list-map-keys` and `x-kubernetes-map-type`.
//! `field_meta.tsv` holds those facts, one line per annotated field, extracted from the Go types
//! of the matching release by `crates/apiserver/tools/extract_field_meta.py` (its header says how
//! to regenerate). Tests below check that every line names a real property and spot-check facts
//! clients depend on.

use serde_json::{Value, json};

use super::model::{Schemas, ext};

/// The table: `definition property patch-strategy merge-key list-type list-map-keys map-type`,
/// tab-separated, `-` for absent, property `.` for the definition itself.
pub(super) const TABLE: &str = include_str!("field_meta.tsv");

/// One line of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FieldMeta<'a> {
    pub definition: &'a str,
    /// `None` for the definition itself.
    pub property: Option<&'a str>,
    pub patch_strategy: Option<&'a str>,
    pub merge_key: Option<&'a str>,
    pub list_type: Option<&'a str>,
    pub list_map_keys: Vec<&'a str>,
    pub map_type: Option<&'a str>,
}

/// Parses the table; malformed lines are skipped (the table is generated and tested).
pub(super) fn parse(table: &str) -> Vec<FieldMeta<'_>> {
    table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            let [
                definition,
                property,
                strategy,
                key,
                list_type,
                map_keys,
                map_type,
            ] = cols[..]
            else {
                return None;
            };
            let present = |s: &str| s != "-";
            Some(FieldMeta {
                definition,
                property: present(property).then_some(property).filter(|p| *p != "."),
                patch_strategy: present(strategy).then_some(strategy),
                merge_key: present(key).then_some(key),
                list_type: present(list_type).then_some(list_type),
                list_map_keys: if present(map_keys) {
                    map_keys.split(',').collect()
                } else {
                    Vec::new()
                },
                map_type: present(map_type).then_some(map_type),
            })
        })
        .collect()
}

/// Writes the table's extensions into the definitions. Lines naming a definition the schemas
/// do not have (API versions k8s-openapi does not ship) are skipped; lines naming a missing
/// property of a present definition are returned, so a test can insist there are none.
pub(super) fn apply<'a>(schemas: &mut Schemas, table: &'a str) -> Vec<FieldMeta<'a>> {
    let mut unresolved = Vec::new();
    for meta in parse(table) {
        let Some(def) = schemas.definition_mut(meta.definition) else {
            continue;
        };
        let target = match meta.property {
            None => Some(def),
            Some(p) => def.get_mut("properties").and_then(|ps| ps.get_mut(p)),
        };
        let Some(Value::Object(target)) = target else {
            unresolved.push(meta);
            continue;
        };
        if let Some(s) = meta.patch_strategy {
            target.insert(ext::PATCH_STRATEGY.into(), json!(s));
        }
        if let Some(k) = meta.merge_key {
            target.insert(ext::PATCH_MERGE_KEY.into(), json!(k));
        }
        if let Some(t) = meta.list_type {
            target.insert(ext::LIST_TYPE.into(), json!(t));
        }
        if !meta.list_map_keys.is_empty() {
            target.insert(ext::LIST_MAP_KEYS.into(), json!(meta.list_map_keys));
        }
        if let Some(t) = meta.map_type {
            target.insert(ext::MAP_TYPE.into(), json!(t));
        }
    }
    unresolved
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openapi::model::GroupVersionKind;

    #[test]
    fn every_line_for_a_served_definition_names_a_real_property() {
        // Generate the built-ins again without the table, then apply it and collect misses.
        let mut schemas = Schemas::new();
        for (name, schema) in Schemas::builtin().iter() {
            schemas.insert(name, schema.clone());
        }
        let unresolved = apply(&mut schemas, TABLE);
        assert!(
            unresolved.is_empty(),
            "lines naming no property: {unresolved:#?}"
        );
        let applied = parse(TABLE)
            .iter()
            .filter(|m| schemas.raw(m.definition).is_some())
            .count();
        assert!(applied > 400, "only {applied} lines matched a definition");
    }

    #[test]
    fn the_table_has_the_facts_kubectl_apply_relies_on() {
        let schemas = Schemas::builtin();
        let pod = schemas
            .for_kind(&GroupVersionKind::new("", "v1", "Pod"))
            .unwrap();
        let spec = pod.property("spec").unwrap();
        let containers = spec.property("containers").unwrap();
        assert_eq!(containers.patch_strategies(), vec!["merge"]);
        assert_eq!(containers.patch_merge_key(), Some("name"));
        assert_eq!(containers.list_type(), Some("map"));
        let volumes = spec.property("volumes").unwrap();
        assert_eq!(volumes.patch_strategies(), vec!["merge", "retainKeys"]);
        let ports = containers.items().unwrap().property("ports").unwrap();
        assert_eq!(ports.patch_merge_key(), Some("containerPort"));
        assert_eq!(ports.list_map_keys(), vec!["containerPort", "protocol"]);
        assert_eq!(
            spec.property("tolerations").unwrap().list_type(),
            Some("atomic")
        );
        assert_eq!(
            spec.property("tolerations").unwrap().patch_merge_key(),
            None
        );
        let meta = pod.property("metadata").unwrap();
        let finalizers = meta.property("finalizers").unwrap();
        assert_eq!(finalizers.patch_strategies(), vec!["merge"]);
        assert_eq!(finalizers.list_type(), Some("set"));
        assert_eq!(
            meta.property("ownerReferences").unwrap().patch_merge_key(),
            Some("uid")
        );
        let deploy = schemas
            .for_kind(&GroupVersionKind::new("apps", "v1", "Deployment"))
            .unwrap();
        let strategy = deploy
            .property("spec")
            .unwrap()
            .property("strategy")
            .unwrap();
        assert_eq!(strategy.patch_strategies(), vec!["retainKeys"]);
        let selector = deploy
            .property("spec")
            .unwrap()
            .property("selector")
            .unwrap();
        assert_eq!(selector.map_type(), Some("atomic"));
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let parsed = parse("# comment\nonly\ttwo\n\na\tb\t-\t-\tatomic\t-\t-\n");
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].property, Some("b"));
        assert_eq!(parsed[0].list_type, Some("atomic"));
    }
}
