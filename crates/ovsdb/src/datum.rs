//! OVSDB values ("datums") as the replica keeps them, with the accessors
//! the agent needs, and their wire form.

use serde_json::{json, Value};
use std::collections::HashMap;

/// A column value: one atom, a set or a map. Atoms stay JSON (`"str"`,
/// `1`, `true`, `["uuid", "..."]`).
#[derive(Clone, Debug, PartialEq)]
pub enum Datum {
    Atom(Value),
    Set(Vec<Value>),
    Map(Vec<(Value, Value)>),
}

/// A row: column name → value.
pub type Row = HashMap<String, Datum>;

impl Datum {
    /// Parse the wire form without schema knowledge.
    pub fn from_wire(value: &Value) -> Datum {
        if let Some(items) = value.as_array() {
            if items.len() == 2 {
                match items[0].as_str() {
                    Some("set") => {
                        return Datum::Set(items[1].as_array().cloned().unwrap_or_default())
                    }
                    Some("map") => {
                        let pairs = items[1]
                            .as_array()
                            .map(|pairs| {
                                pairs
                                    .iter()
                                    .filter_map(|p| {
                                        p.as_array()
                                            .filter(|p| p.len() == 2)
                                            .map(|p| (p[0].clone(), p[1].clone()))
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        return Datum::Map(pairs);
                    }
                    _ => {}
                }
            }
        }
        Datum::Atom(value.clone())
    }

    /// The elements: an atom is a one-element set.
    pub fn elements(&self) -> Vec<&Value> {
        match self {
            Datum::Atom(v) => vec![v],
            Datum::Set(items) => items.iter().collect(),
            Datum::Map(_) => Vec::new(),
        }
    }

    /// The first element as a string, if any.
    pub fn as_str(&self) -> Option<&str> {
        self.elements().first().and_then(|v| v.as_str())
    }

    /// The first element as an integer.
    pub fn as_i64(&self) -> Option<i64> {
        self.elements().first().and_then(|v| v.as_i64())
    }

    /// UUIDs referenced by this value (`["uuid", "..."]` atoms).
    pub fn uuids(&self) -> Vec<&str> {
        self.elements().into_iter().filter_map(uuid_of).collect()
    }

    /// A string→string map (`external_ids`, `options`).
    pub fn string_map(&self) -> HashMap<String, String> {
        match self {
            Datum::Map(pairs) => pairs
                .iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
                .collect(),
            _ => HashMap::new(),
        }
    }

    /// Strings of a set of strings (`mac`, `addresses`).
    pub fn strings(&self) -> Vec<&str> {
        self.elements()
            .into_iter()
            .filter_map(Value::as_str)
            .collect()
    }

    /// The wire form.
    pub fn to_wire(&self) -> Value {
        match self {
            Datum::Atom(v) => v.clone(),
            Datum::Set(items) => json!(["set", items]),
            Datum::Map(pairs) => json!([
                "map",
                pairs.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>()
            ]),
        }
    }
}

/// `"x"` of `["uuid", "x"]`.
pub fn uuid_of(value: &Value) -> Option<&str> {
    let items = value.as_array()?;
    (items.len() == 2 && items[0] == "uuid")
        .then(|| items[1].as_str())
        .flatten()
}

/// `["uuid", id]`.
pub fn uuid(id: &str) -> Value {
    json!(["uuid", id])
}

/// `["map", [[k, v], ...]]` of string pairs.
pub fn string_map<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Value {
    json!([
        "map",
        pairs
            .into_iter()
            .map(|(k, v)| json!([k, v]))
            .collect::<Vec<_>>()
    ])
}

/// `["set", [...]]`.
pub fn set(items: Vec<Value>) -> Value {
    json!(["set", items])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms_round_trip() {
        let m = Datum::from_wire(&json!(["map", [["a", "1"], ["b", "2"]]]));
        assert_eq!(m.string_map()["b"], "2");
        assert_eq!(Datum::from_wire(&m.to_wire()), m);
        let s = Datum::from_wire(&json!(["set", [["uuid", "u1"]]]));
        assert_eq!(s.uuids(), vec!["u1"]);
        assert_eq!(Datum::from_wire(&json!(["uuid", "u2"])).uuids(), vec!["u2"]);
        assert_eq!(Datum::from_wire(&json!("x")).as_str(), Some("x"));
        assert!(Datum::from_wire(&json!(["set", []])).as_str().is_none());
    }
}
