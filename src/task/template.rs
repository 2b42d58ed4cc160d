//! `{column}` templates: filled from a row in one pass.

use std::collections::BTreeMap;

/// Replace `{column}` by the row's values, trimmed (TSV text fields).
pub fn fill(template: &str, row: &BTreeMap<String, String>) -> String {
    fill_with(template, row, str::trim)
}

/// Fill without trimming (code keeps its whitespace).
pub fn fill_raw(template: &str, row: &BTreeMap<String, String>) -> String {
    fill_with(template, row, |v| v)
}

/// One pass over the template: a value that itself contains `{column}` (code with an f-string, a
/// user's text) is inserted as it is, never filled again. Braces that name no column stay.
fn fill_with(template: &str, row: &BTreeMap<String, String>, value: fn(&str) -> &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        match after.find('}').and_then(|j| row.get(&after[..j]).map(|v| (j, v))) {
            Some((j, v)) => {
                out.push_str(value(v));
                rest = &after[j + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The `{column}` placeholders of a template.
pub fn placeholders(template: &str) -> Vec<String> {
    let mut out = vec![];
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        let Some(j) = rest[i..].find('}') else { break };
        out.push(rest[i + 1..i + j].to_string());
        rest = &rest[i + j + 1..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_filled_in_one_pass() {
        let row: BTreeMap<String, String> = [("input", "f'{output}' and {x}"), ("output", "3")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        // A value holding `{output}` stays as it is; unknown and unmatched braces stay too.
        assert_eq!(fill_raw("{input} -> {output} {none} {", &row), "f'{output}' and {x} -> 3 {none} {");
        assert_eq!(fill("[{output}]{output}", &row), "[3]3");
        assert_eq!(placeholders("{a} x {b}{"), ["a", "b"]);
    }
}
