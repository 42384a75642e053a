//! Reads a parsed YAML tree section by section, collecting every problem with
//! its key path instead of stopping at the first.
//!
//! serde's derive stops at the first error and cannot tell "unknown key" from
//! "wrong type" with a path; `check-config` must list them all, so each field
//! is deserialised on its own into a slot that already holds its default.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::Problem;

/// What reading the file found: problems stop the daemon, warnings do not
/// (a key it does not read in a section it shares with the rest of Axion).
#[derive(Debug, Default)]
pub(crate) struct Findings {
    pub(crate) problems: Vec<Problem>,
    pub(crate) warnings: Vec<Problem>,
}

/// What a section does with a key nobody asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unknown {
    /// The file's top level and Axion's own sections: none of our business.
    Ignore,
    /// The daemon's own section: a problem, so a typo cannot go unnoticed.
    Refuse,
    /// A section shared with the rest of Axion (`base.push`): a warning,
    /// since Axion may keep keys of its own there.
    Warn,
}

pub(crate) struct Section<'v, 'p> {
    path: String,
    map: Option<&'v Map<String, Value>>,
    known: Vec<&'static str>,
    unknown: Unknown,
    findings: &'p mut Findings,
}

impl<'v, 'p> Section<'v, 'p> {
    pub(crate) fn new(
        path: impl Into<String>,
        value: Option<&'v Value>,
        unknown: Unknown,
        findings: &'p mut Findings,
    ) -> Self {
        let path = path.into();
        let map = match value {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(map),
            Some(other) => {
                findings.problems.push(Problem::new(
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
            unknown,
            findings,
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
                self.findings
                    .problems
                    .push(Problem::new(path, clean_serde_message(&e)));
                return;
            }
        };
        match check(parsed) {
            Ok(v) => *slot = v,
            Err(message) => {
                let path = self.path_of(key);
                self.findings.problems.push(Problem::new(path, message));
            }
        }
    }

    /// The value of `key` in the daemon's own section: the file's when it
    /// has a usable one, otherwise the key's default from
    /// [`super::keys::KEYS`], read through the same `check`. A value the
    /// file gets wrong is a problem, and the default stands in meanwhile so
    /// that every other key is still checked.
    pub(crate) fn value<R, T>(
        &mut self,
        key: &'static str,
        check: impl Fn(R) -> Result<T, String>,
    ) -> T
    where
        R: DeserializeOwned,
    {
        let mut slot = self.default_of(key, &check);
        self.field_with(key, &mut slot, &check);
        slot
    }

    /// The declared default of `key`, read through `check`. A default that
    /// does not read is a mistake in the table, caught by every test.
    pub(crate) fn default_of<R, T>(
        &self,
        key: &'static str,
        check: impl Fn(R) -> Result<T, String>,
    ) -> T
    where
        R: DeserializeOwned,
    {
        let declared = super::keys::key(&self.path_of(key));
        serde_json::from_value::<R>(super::keys::default_value(declared))
            .map_err(|e| e.to_string())
            .and_then(check)
            .unwrap_or_else(|e| {
                panic!(
                    "the declared default of {} ({}) does not read: {e}",
                    declared.path, declared.default
                )
            })
    }

    /// A section below this one, treating unknown keys the same way.
    pub(crate) fn section(&mut self, key: &'static str) -> Section<'v, '_> {
        let unknown = self.unknown;
        self.section_as(key, unknown)
    }

    /// A section below this one with its own treatment of unknown keys.
    pub(crate) fn section_as(&mut self, key: &'static str, unknown: Unknown) -> Section<'v, '_> {
        let value = self.raw(key);
        let path = self.path_of(key);
        Section::new(path, value, unknown, self.findings)
    }

    pub(crate) fn problem(&mut self, key: &str, message: impl Into<String>) {
        let path = self.path_of(key);
        self.findings.problems.push(Problem::new(path, message));
    }

    /// Reports the keys nobody asked for, naming the known key each most
    /// likely meant.
    pub(crate) fn finish(self) {
        let Some(map) = self.map else { return };
        if self.unknown == Unknown::Ignore {
            return;
        }
        let mut expected = self.known.clone();
        expected.sort_unstable();
        for key in map.keys() {
            if self.known.contains(&key.as_str()) {
                continue;
            }
            let guess = closest(key, &expected)
                .map_or_else(String::new, |known| format!("did you mean `{known}`? "));
            let path = self.path_of(key);
            let finding = match self.unknown {
                Unknown::Ignore => continue,
                Unknown::Refuse => Problem::new(
                    path,
                    format!(
                        "unknown key ({guess}expected one of: {})",
                        expected.join(", ")
                    ),
                ),
                Unknown::Warn => Problem::new(
                    path,
                    format!(
                        "not read by axion-push ({guess}it reads {} here; other keys are left to the rest of Axion)",
                        expected.join(", ")
                    ),
                ),
            };
            if self.unknown == Unknown::Refuse {
                self.findings.problems.push(finding);
            } else {
                self.findings.warnings.push(finding);
            }
        }
    }
}

/// The known key `key` is most likely a misspelling of: at most two edits
/// away (a swap of neighbours counting as one), case and `-`/`_` aside.
pub(crate) fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let key = normalize(key);
    known
        .iter()
        .map(|k| (edit_distance(&key, &normalize(k)), *k))
        .filter(|(d, _)| *d <= 2 && 2 * d < key.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn normalize(key: &str) -> Vec<char> {
    key.chars()
        .map(|c| {
            if c == '-' {
                '_'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// Optimal string alignment distance: insertions, deletions, substitutions
/// and transpositions of adjacent characters (`emial` → `email` is one).
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_swapped_pair_of_letters_is_one_edit() {
        assert_eq!(
            closest(
                "vapid_emial",
                &["vapid_email", "vapid_private_key", "vapid_public_key"]
            ),
            Some("vapid_email")
        );
    }

    #[test]
    fn dashes_and_case_do_not_count_as_edits() {
        assert_eq!(closest("Axion-Push", &["axion_push"]), Some("axion_push"));
    }

    #[test]
    fn a_key_far_from_every_known_one_has_no_guess() {
        assert_eq!(closest("colour", &["url", "client_id", "username"]), None);
        assert_eq!(closest("db", &["push"]), None);
    }
}
