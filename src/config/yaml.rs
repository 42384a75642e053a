//! YAML syntax errors in the operator's words: the line, what is wrong there
//! and what to do, instead of the parser's advice to its programmer (such as
//! serde-saphyr's "set DuplicateKeyPolicy in Options").

use serde_saphyr::MessageFormatter as _;

/// Where a config file stops being YAML, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// 1-based; 0 when the parser could not tell.
    pub line: usize,
    /// 1-based; 0 when it says nothing more than the line.
    pub column: usize,
    /// What is wrong, as a sentence about the file.
    pub message: String,
    /// The offending line as written, for the operator to recognise.
    pub excerpt: Option<String>,
}

/// Parses config text into a tree.
pub(super) fn parse(text: &str) -> Result<serde_json::Value, SyntaxError> {
    serde_saphyr::from_str(text).map_err(|e| translate(&e, text))
}

/// A line as it may be shown: its key, never its value (the line may hold a
/// password or a key).
fn without_value(line: &str) -> String {
    match line.split_once(':') {
        Some((key, value)) if !value.trim().is_empty() => format!("{key}: …"),
        _ => line.to_owned(),
    }
}

fn translate(error: &serde_saphyr::Error, text: &str) -> SyntaxError {
    let lines: Vec<&str> = text.lines().collect();
    let (line, column) = error
        .location()
        .map_or((0, 0), |l| (to_usize(l.line()), to_usize(l.column())));
    let excerpt = line
        .checked_sub(1)
        .and_then(|i| lines.get(i))
        .map(|l| without_value(l.trim_end()));
    let (message, column) = match error.without_snippet() {
        serde_saphyr::Error::DuplicateMappingKey { key, .. } => {
            (duplicate_key(&lines, line, column, key.as_deref()), 0)
        }
        serde_saphyr::Error::MultipleDocuments { .. } => (
            "the file holds more than one YAML document (a `---` line between them): keep one"
                .to_owned(),
            0,
        ),
        other => {
            let what = serde_saphyr::UserMessageFormatter.format_message(other);
            let hint = if is_about_layout(&what) {
                ": indent with spaces only, every key of one section by the same amount"
            } else {
                ""
            };
            (format!("{what}{hint}"), column)
        }
    };
    SyntaxError {
        line,
        column,
        message,
        excerpt,
    }
}

/// Messages about indentation and block structure: the usual cause is a
/// pasted block indented differently, or a tab.
fn is_about_layout(message: &str) -> bool {
    ["indent", "tab", "block", "mapping values are not allowed"]
        .iter()
        .any(|needle| message.contains(needle))
}

/// The usual cause: a block pasted from documentation next to the section
/// the file already has, instead of a change to that section.
fn duplicate_key(lines: &[&str], line: usize, column: usize, key: Option<&str>) -> String {
    let Some(key) = key else {
        return "a key appears twice in the same mapping: YAML allows each key once".to_owned();
    };
    let indent = column.saturating_sub(1);
    let path = parents(lines, line, indent)
        .into_iter()
        .rev()
        .chain(std::iter::once(key.to_owned()))
        .collect::<Vec<_>>()
        .join(".");
    let first = earlier_sibling(lines, line, indent, key)
        .map_or_else(String::new, |first| format!(" (first on line {first})"));
    format!(
        "`{path}` is written a second time{first}: YAML allows each key once per section, \
         so change the existing `{key}` (or move these lines into it) instead of adding another"
    )
}

/// The key a block-style line starts with, if any.
fn key_of(line: &str) -> Option<&str> {
    let content = line.trim_start();
    if content.starts_with('#') || content.starts_with('-') {
        return None;
    }
    let (key, _) = content.split_once(':')?;
    Some(key.trim().trim_matches(|c| c == '"' || c == '\''))
}

fn indentation(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_content(line: &str) -> bool {
    let trimmed = line.trim();
    !trimmed.is_empty() && !trimmed.starts_with('#')
}

/// The keys of the sections enclosing `line` (1-based), innermost first.
fn parents(lines: &[&str], line: usize, mut indent: usize) -> Vec<String> {
    let mut found = Vec::new();
    for text in lines.iter().take(line.saturating_sub(1)).rev() {
        if indent == 0 {
            break;
        }
        if is_content(text) && indentation(text) < indent {
            let Some(key) = key_of(text) else { break };
            found.push(key.to_owned());
            indent = indentation(text);
        }
    }
    found
}

/// The line (1-based) where `key` first appears in the same mapping as the
/// duplicate on `line`: a sibling at the same indentation, with no line of
/// the enclosing section in between.
fn earlier_sibling(lines: &[&str], line: usize, indent: usize, key: &str) -> Option<usize> {
    let mut first = None;
    for (i, text) in lines.iter().enumerate().take(line.saturating_sub(1)).rev() {
        if !is_content(text) {
            continue;
        }
        match indentation(text) {
            n if n < indent => break,
            n if n == indent && key_of(text) == Some(key) => first = Some(i + 1),
            _ => {}
        }
    }
    first
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> SyntaxError {
        parse(text).expect_err("not valid YAML")
    }

    #[test]
    fn a_second_top_level_section_is_explained_with_both_lines() {
        let e = error(
            "base:\n  push: {}\naxion_push:\n  broker:\n    listen: 127.0.0.1:1883\n\naxion_push:\n  broker:\n    websocket_listen: 127.0.0.1:8083\n",
        );
        assert_eq!(e.line, 7);
        assert_eq!(e.excerpt.as_deref(), Some("axion_push:"));
        assert!(
            e.message
                .starts_with("`axion_push` is written a second time (first on line 3)"),
            "{}",
            e.message
        );
        assert!(e.message.contains("change the existing `axion_push`"));
        assert!(!e.message.contains("DuplicateKeyPolicy"), "{}", e.message);
    }

    #[test]
    fn a_nested_duplicate_is_named_by_its_key_path() {
        let e = error(
            "axion_push:\n  metrics:\n    listen: null\n  broker:\n    listen: 127.0.0.1:1883\n    # moved\n    listen: 127.0.0.1:1884\n",
        );
        assert_eq!(e.line, 7);
        assert!(
            e.message.starts_with(
                "`axion_push.broker.listen` is written a second time (first on line 5)"
            ),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_tab_in_the_indentation_is_reported_with_its_line_and_a_hint() {
        let e = error("axion_push:\n\tbroker: {}\n");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("tab"), "{}", e.message);
        assert!(e.message.contains("indent with spaces"), "{}", e.message);
    }

    #[test]
    fn an_unclosed_quote_is_reported_with_its_line() {
        let e = error("base:\n  push:\n    vapid_email: 'mailto:ops@example.com\n");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("quote"), "{}", e.message);
    }
}
