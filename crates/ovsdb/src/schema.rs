//! Column types from a database schema: enough to apply `update2` diffs,
//! where sets and maps travel as differences and everything else whole.

use crate::datum::Datum;
use serde_json::Value;
use std::collections::HashMap;

/// What kind of value a column holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnKind {
    /// Exactly one atom.
    Scalar,
    /// A set (including the optional 0..1 kind, which OVSDB diffs as a set).
    Set,
    /// A map.
    Map,
}

/// table → column → kind.
#[derive(Clone, Debug, Default)]
pub struct Schema {
    pub name: String,
    tables: HashMap<String, HashMap<String, ColumnKind>>,
}

impl Schema {
    /// Read the kinds from a `get_schema` answer.
    pub fn from_json(schema: &Value) -> Schema {
        let mut tables = HashMap::new();
        if let Some(map) = schema.get("tables").and_then(Value::as_object) {
            for (table, def) in map {
                let mut columns = HashMap::new();
                if let Some(cols) = def.get("columns").and_then(Value::as_object) {
                    for (name, col) in cols {
                        columns.insert(
                            name.clone(),
                            kind_of(col.get("type").unwrap_or(&Value::Null)),
                        );
                    }
                }
                tables.insert(table.clone(), columns);
            }
        }
        Schema {
            name: schema
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            tables,
        }
    }

    pub fn kind(&self, table: &str, column: &str) -> Option<ColumnKind> {
        self.tables.get(table)?.get(column).copied()
    }

    pub fn has_table(&self, table: &str) -> bool {
        self.tables.contains_key(table)
    }

    /// Parse a column's wire value with its type known.
    pub fn datum(&self, table: &str, column: &str, value: &Value) -> Datum {
        match (self.kind(table, column), Datum::from_wire(value)) {
            (Some(ColumnKind::Set), Datum::Atom(atom)) => Datum::Set(vec![atom]),
            (_, d) => d,
        }
    }

    /// Apply an `update2` "modify" diff to a column.
    pub fn apply_diff(
        &self,
        table: &str,
        column: &str,
        current: Option<&Datum>,
        diff: &Value,
    ) -> Datum {
        let diff = Datum::from_wire(diff);
        match self.kind(table, column) {
            Some(ColumnKind::Set) => {
                let mut items: Vec<Value> = current
                    .map(|d| d.elements().into_iter().cloned().collect())
                    .unwrap_or_default();
                for element in diff.elements() {
                    // A set diff toggles: present → removed, absent → added.
                    match items.iter().position(|i| i == element) {
                        Some(at) => {
                            items.remove(at);
                        }
                        None => items.push(element.clone()),
                    }
                }
                Datum::Set(items)
            }
            Some(ColumnKind::Map) => {
                let mut pairs = match current {
                    Some(Datum::Map(p)) => p.clone(),
                    _ => Vec::new(),
                };
                if let Datum::Map(changes) = diff {
                    for (key, value) in changes {
                        match pairs.iter().position(|(k, _)| *k == key) {
                            Some(at) if pairs[at].1 == value => {
                                pairs.remove(at);
                            }
                            Some(at) => pairs[at].1 = value,
                            None => pairs.push((key, value)),
                        }
                    }
                }
                Datum::Map(pairs)
            }
            _ => diff,
        }
    }
}

fn kind_of(column_type: &Value) -> ColumnKind {
    let Some(obj) = column_type.as_object() else {
        return ColumnKind::Scalar; // "string", "integer", ...
    };
    if obj.get("value").is_some() {
        return ColumnKind::Map;
    }
    let min = obj.get("min").and_then(Value::as_u64).unwrap_or(1);
    let max = match obj.get("max") {
        Some(Value::String(s)) if s == "unlimited" => u64::MAX,
        Some(v) => v.as_u64().unwrap_or(1),
        None => 1,
    };
    if min == 1 && max == 1 {
        ColumnKind::Scalar
    } else {
        ColumnKind::Set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::from_json(
            &json!({"name": "T", "tables": {"Port_Binding": {"columns": {
                "chassis": {"type": {"key": {"type": "uuid", "refTable": "Chassis"}, "min": 0, "max": 1}},
                "mac": {"type": {"key": "string", "min": 0, "max": "unlimited"}},
                "external_ids": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}},
                "logical_port": {"type": "string"}
            }}}}),
        )
    }

    #[test]
    fn diffs_apply_like_ovsdb_server() {
        let s = schema();
        let chassis = s.datum("Port_Binding", "chassis", &json!(["uuid", "a"]));
        assert_eq!(chassis, Datum::Set(vec![json!(["uuid", "a"])]));
        // a → b arrives as the symmetric difference {a, b}.
        let moved = s.apply_diff(
            "Port_Binding",
            "chassis",
            Some(&chassis),
            &json!(["set", [["uuid", "a"], ["uuid", "b"]]]),
        );
        assert_eq!(moved.uuids(), vec!["b"]);
        let unbound = s.apply_diff(
            "Port_Binding",
            "chassis",
            Some(&moved),
            &json!(["uuid", "b"]),
        );
        assert!(unbound.uuids().is_empty());
        let ids = s.datum(
            "Port_Binding",
            "external_ids",
            &json!(["map", [["k", "1"], ["d", "x"]]]),
        );
        let ids = s.apply_diff(
            "Port_Binding",
            "external_ids",
            Some(&ids),
            &json!(["map", [["k", "2"], ["d", "x"], ["n", "3"]]]),
        );
        let m = ids.string_map();
        assert_eq!(
            (
                m.get("k").map(String::as_str),
                m.get("d"),
                m.get("n").map(String::as_str)
            ),
            (Some("2"), None, Some("3"))
        );
        let name = s.apply_diff("Port_Binding", "logical_port", None, &json!("p2"));
        assert_eq!(name.as_str(), Some("p2"));
    }
}
