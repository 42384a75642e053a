//! Reads a parsed YAML tree section by section, collecting every problem with
//! its key path instead of stopping at the first.
//!
//! serde's derive stops at the first error and cannot tell "unknown key" from
//! "wrong type" with a path; `check-config` must list them all, so each field
//! is deserialised on its own into a slot that already holds its default.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::Problem;

pub(crate) struct Section<'v, 'p> {
    path: String,
    map: Option<&'v Map<String, Value>>,
    known: Vec<&'static str>,
    /// Sections owned by someone else (Axion's `base.push`) tolerate keys
    /// they do not know.
    strict: bool,
    problems: &'p mut Vec<Problem>,
}

impl<'v, 'p> Section<'v, 'p> {
    pub(crate) fn new(
        path: impl Into<String>,
        value: Option<&'v Value>,
        strict: bool,
        problems: &'p mut Vec<Problem>,
    ) -> Self {
        let path = path.into();
        let map = match value {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(map),
            Some(other) => {
                problems.push(Problem::new(
                    &path,
                    format!("must be a mapping, not {}", kind_of(other)),
                ));
                None
            }
        };
        Self {
            path,
            map,
            known: Vec::new(),
            strict,
            problems,
        }
    }

    pub(crate) fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn raw(&mut self, key: &'static str) -> Option<&'v Value> {
        self.known.push(key);
        self.map.and_then(|m| m.get(key))
    }

    /// Overwrites `slot` when `key` is present. An explicit `null` clears an
    /// optional value and keeps the default of any other.
    pub(crate) fn field<T: DeserializeOwned>(&mut self, key: &'static str, slot: &mut T) {
        self.field_with(key, slot, Ok);
    }

    /// Like [`Section::field`], then `check` turns the raw value into the
    /// slot's type or explains why it cannot.
    pub(crate) fn field_with<R, T>(
        &mut self,
        key: &'static str,
        slot: &mut T,
        check: impl FnOnce(R) -> Result<T, String>,
    ) where
        R: DeserializeOwned,
    {
        let Some(value) = self.raw(key) else {
            return;
        };
        let parsed = match serde_json::from_value::<R>(value.clone()) {
            Ok(parsed) => parsed,
            // A null for a non-optional field means "the default".
            Err(_) if value.is_null() => return,
            Err(e) => {
                let path = self.path_of(key);
                self.problems
                    .push(Problem::new(path, clean_serde_message(&e)));
                return;
            }
        };
        match check(parsed) {
            Ok(v) => *slot = v,
            Err(message) => {
                let path = self.path_of(key);
                self.problems.push(Problem::new(path, message));
            }
        }
    }

    pub(crate) fn section(&mut self, key: &'static str) -> Section<'v, '_> {
        let value = self.raw(key);
        let path = self.path_of(key);
        Section::new(path, value, self.strict, self.problems)
    }

    /// Makes this section and those below it refuse unknown keys.
    pub(crate) fn strict_mode(&mut self) {
        self.strict = true;
    }

    pub(crate) fn extend(&mut self, problems: Vec<Problem>) {
        self.problems.extend(problems);
    }

    pub(crate) fn problem(&mut self, key: &str, message: impl Into<String>) {
        let path = self.path_of(key);
        self.problems.push(Problem::new(path, message));
    }

    /// Reports keys nobody asked for (in strict sections).
    pub(crate) fn finish(self) {
        let Some(map) = self.map else { return };
        if !self.strict {
            return;
        }
        for key in map.keys() {
            if !self.known.contains(&key.as_str()) {
                let mut expected = self.known.clone();
                expected.sort_unstable();
                let path = self.path_of(key);
                self.problems.push(Problem::new(
                    path,
                    format!("unknown key (expected one of: {})", expected.join(", ")),
                ));
            }
        }
    }
}

pub(crate) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// serde_json appends " at line 1 column 2" to messages about a value it
/// re-read from the tree; that position means nothing to the operator.
fn clean_serde_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.find(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}
