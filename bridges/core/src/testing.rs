//! For a bridge's own tests (the `testing` feature): whether
//! `config.example.yaml` documents every option, and a fake [`Host`] to
//! feed a bridge's inbound path without the daemon.

use serde::Serialize;
use serde_json::Value;

mod host;
pub use host::FakeHost;

/// The example config of the repository, for [`undocumented`].
pub const EXAMPLE: &str = include_str!("../../../config.example.yaml");

/// The options of `options` (serialized, every option with its value) that
/// the example's section for bridges of `kind` never names, commented out
/// or not. A section is the block of lines from `type: <kind>` to the next
/// blank line. Give an `options` with every optional group present, so
/// that the options inside them are seen too.
pub fn undocumented(example: &str, kind: &str, options: &impl Serialize) -> Vec<String> {
    let Some(section) = section(example, kind) else {
        return vec![format!("(the example has no section with `type: {kind}`)")];
    };
    unnamed(&serde_json::to_value(options).expect("options serialize"), &section)
}

/// Every key of `value` (an options tree, at any depth) that `lines` never
/// name as an option ([`names`]), by its path.
pub fn unnamed(value: &Value, lines: &[String]) -> Vec<String> {
    let mut missing = Vec::new();
    walk(value, "", lines, &mut missing);
    missing
}

/// The lines of `example`, comment marks and indentation taken off.
pub fn uncommented(example: &str) -> Vec<String> {
    example.lines().map(|l| l.trim_start_matches(|c: char| c == '#' || c.is_whitespace()).trim_end().to_string()).collect()
}

/// The lines of the example's section of type `kind`, comment marks taken off.
pub fn section(example: &str, kind: &str) -> Option<Vec<String>> {
    let lines = uncommented(example);
    let start = lines.iter().position(|l| *l == format!("type: {kind}"))?;
    let end = example.lines().skip(start).position(|l| l.trim().is_empty()).map_or(lines.len(), |n| start + n);
    Some(lines[start..end].to_vec())
}

/// Whether `key` (or `<key>_file`) is named as an option in `lines`.
pub fn names(lines: &[String], key: &str) -> bool {
    let forms = [format!("{key}:"), format!("{key}_file:")];
    lines.iter().any(|l| {
        forms.iter().any(|f| {
            l.starts_with(f.as_str()) || l.starts_with(&format!("- {f}")) || l.contains(&format!("{{ {f}")) || l.contains(&format!(", {f}"))
        })
    })
}

fn walk(value: &Value, path: &str, section: &[String], missing: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let here = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                if !names(section, key) {
                    missing.push(here.clone());
                }
                walk(v, &here, section, missing);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                walk(v, &format!("{path}[{i}]"), section, missing);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_names_its_options_commented_or_not() {
        let example = "bridges:\n  # x:\n  #   type: demo\n  #   # alpha: 1\n  #   beta_file: /b\n  #   gamma: { delta: 1, eps: 2 }\n\n  other:\n    zeta: 1\n";
        let lines = section(example, "demo").unwrap();
        for key in ["alpha", "beta", "gamma", "delta", "eps"] {
            assert!(names(&lines, key), "{key}");
        }
        assert!(!names(&lines, "zeta"), "another section's option");
        let options = serde_json::json!({"alpha": 1, "gamma": {"delta": 1, "omega": 3}, "zeta": 2});
        assert_eq!(undocumented(example, "demo", &options), ["gamma.omega", "zeta"]);
        assert_eq!(undocumented(example, "nothing", &options).len(), 1);
    }
}
